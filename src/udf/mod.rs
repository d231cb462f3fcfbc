//! DataFusion glue: SQL functions backed by `crate::stats` kernels.
//!
//! [`register_all`] is called on every `SessionContext` mlwatch creates (the
//! window drift computation, `mlwatch sql`), so the same functions work
//! everywhere.

mod ks;
mod ks_reference;

use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::AggregateUDF;

pub use ks::Ks2Samp;
pub use ks_reference::{KsReference, References};

use crate::stats::ks::KsMethod;

/// Registers every mlwatch SQL function on `ctx`; `ks_2samp` uses `ks_method`.
pub fn register_all(ctx: &SessionContext, ks_method: KsMethod) {
    ctx.register_udaf(AggregateUDF::from(Ks2Samp::new(ks_method)));
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::util::pretty::pretty_format_batches;

    use super::*;

    /// `ks_reference` against a held sample equals `ks_2samp` with the
    /// same sample given as rows, and both equal the kernel.
    #[tokio::test]
    async fn ks_reference_equals_ks_2samp() -> datafusion::error::Result<()> {
        let reference = vec![0.1, 0.4, 0.45, 0.9, 1.3, 2.0, 2.2, 3.1];
        let mut refs = References::new();
        refs.insert("m/x".into(), Arc::new(reference.clone()));
        let ctx = crate::query::new_context(KsMethod::Auto);
        ctx.register_udaf(AggregateUDF::from(KsReference::new(
            KsMethod::Auto,
            Arc::new(refs),
        )));
        let cur = "(1.0), (1.5), (2.5), (3.0), (3.5), (4.0)";
        let rows: Vec<String> = reference.iter().map(|v| format!("({v}, false)")).collect();
        let a = ctx
            .sql(&format!(
                "SELECT ks_reference(v, 'm/x') AS ks FROM (VALUES {cur}) AS t(v)"
            ))
            .await?
            .collect()
            .await?;
        let both = format!(
            "SELECT ks_2samp(v, c) AS ks FROM (VALUES {}, {}) AS t(v, c)",
            rows.join(", "),
            cur.replace(")", ", true)")
        );
        let b = ctx.sql(&both).await?.collect().await?;
        let (a, b) = (
            pretty_format_batches(&a)?.to_string(),
            pretty_format_batches(&b)?.to_string(),
        );
        assert_eq!(a, b);
        let k = crate::stats::ks::ks_2samp(
            &reference,
            &[1.0, 1.5, 2.5, 3.0, 3.5, 4.0],
            crate::stats::Alternative::TwoSided,
            KsMethod::Auto,
        )
        .expect("valid samples");
        assert!(a.contains(&format!("statistic: {}", k.statistic)), "{a}");
        Ok(())
    }
}
