//! DataFusion glue: SQL functions backed by `crate::stats` kernels.
//!
//! [`register_all`] is called on every `SessionContext` mlwatch creates (the
//! window drift computation, `mlwatch sql`), so the same functions work
//! everywhere.

mod ks;

use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::AggregateUDF;

pub use ks::Ks2Samp;

use crate::stats::ks::KsMethod;

/// Registers every mlwatch SQL function on `ctx`; `ks_2samp` uses `ks_method`.
pub fn register_all(ctx: &SessionContext, ks_method: KsMethod) {
    ctx.register_udaf(AggregateUDF::from(Ks2Samp::new(ks_method)));
}
