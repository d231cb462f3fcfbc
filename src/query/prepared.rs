//! Queries planned once and run on every closed window.
//!
//! Planning `sql/window_drift.sql` (parse, analyse, optimise, physical
//! planning) costs about 30 ms in a release build; running it on a window's
//! few rows well under 10 ms. A [`Prepared`] query is planned once over
//! *slots*, tables whose rows are handed over at each run, so a window pays
//! only for execution. Parameters (`$1`, ...) are bound at planning: they
//! are settings, constant for a run.
//!
//! Before each run the plan's operators are reset
//! ([`reset_plan_states`]), as DataFusion does to re-run the plans of a
//! recursive query; plans with dynamic filters (joins, top-k) cannot be
//! re-run this way, so plan in [`super::window_context`], which turns them
//! off.

use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::TableType;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType, reset_plan_states};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream, collect,
};
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};

type Rows = Arc<Mutex<Vec<RecordBatch>>>;

/// A query planned once over named input tables.
pub(crate) struct Prepared {
    plan: Arc<dyn ExecutionPlan>,
    /// The inputs (rows, schema) in the order [`Prepared::run`] takes them.
    slots: Vec<(Rows, SchemaRef)>,
    task: Arc<TaskContext>,
}

impl Prepared {
    /// Plans `sql` in `ctx` with `inputs` (name, schema) registered as
    /// slots and `params` bound. `ctx` should be one the caller owns: the
    /// slots replace any table of the same names.
    pub async fn new(
        ctx: &SessionContext,
        sql: &str,
        inputs: &[(&str, SchemaRef)],
        params: Vec<ScalarValue>,
    ) -> Result<Self> {
        let mut slots = Vec::with_capacity(inputs.len());
        for (name, schema) in inputs {
            let rows = Rows::default();
            ctx.deregister_table(*name)?;
            ctx.register_table(
                *name,
                Arc::new(Slot {
                    schema: schema.clone(),
                    rows: rows.clone(),
                }),
            )?;
            slots.push((rows, schema.clone()));
        }
        let df = ctx.sql(sql).await?.with_param_values(params)?;
        let plan = df.create_physical_plan().await?;
        Ok(Self {
            plan,
            slots,
            task: ctx.task_ctx(),
        })
    }

    /// The result's schema.
    pub fn schema(&self) -> SchemaRef {
        self.plan.schema()
    }

    /// Runs the query on `inputs` (one batch per input, in the order given
    /// to [`Prepared::new`]); the result as one batch.
    pub async fn run(&self, inputs: Vec<RecordBatch>) -> Result<RecordBatch> {
        if inputs.len() != self.slots.len() {
            return Err(Error::Task {
                task: "prepared query",
                reason: format!(
                    "{} inputs given, {} expected",
                    inputs.len(),
                    self.slots.len()
                ),
            });
        }
        for ((slot, schema), batch) in self.slots.iter().zip(inputs) {
            if batch.schema() != *schema {
                return Err(Error::Task {
                    task: "prepared query",
                    reason: format!(
                        "input schema {:?} differs from the planned {schema:?}",
                        batch.schema()
                    ),
                });
            }
            *lock(slot) = vec![batch];
        }
        let result = match reset_plan_states(self.plan.clone()) {
            Ok(plan) => collect(plan, self.task.clone()).await,
            Err(e) => Err(e),
        };
        for (slot, _) in &self.slots {
            lock(slot).clear();
        }
        Ok(concat_batches(&self.plan.schema(), &result?)?)
    }
}

fn lock(rows: &Rows) -> std::sync::MutexGuard<'_, Vec<RecordBatch>> {
    // The rows are replaced whole; a panic elsewhere cannot leave them torn.
    rows.lock().unwrap_or_else(|e| e.into_inner())
}

/// A table whose rows are those of the current run.
#[derive(Debug)]
struct Slot {
    schema: SchemaRef,
    rows: Rows,
}

#[async_trait]
impl TableProvider for Slot {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Arc::new(SlotExec {
            schema,
            projection: projection.cloned(),
            rows: self.rows.clone(),
            properties: Arc::new(properties),
        }))
    }
}

/// Scans a [`Slot`]'s rows as they are when executed.
#[derive(Debug)]
struct SlotExec {
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    rows: Rows,
    properties: Arc<PlanProperties>,
}

impl DisplayAs for SlotExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SlotExec: projection={:?}", self.projection)
    }
}

impl ExecutionPlan for SlotExec {
    fn name(&self) -> &str {
        "SlotExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> datafusion::common::Result<TreeNodeRecursion>,
    ) -> datafusion::common::Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> datafusion::common::Result<SendableRecordBatchStream> {
        let batches = lock(&self.rows)
            .iter()
            .map(|b| match &self.projection {
                Some(p) => b.project(p),
                None => Ok(b.clone()),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Box::pin(MemoryStream::try_new(
            batches,
            self.schema.clone(),
            None,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;

    fn batch(schema: &SchemaRef, keys: &[&str], values: &[f64]) -> RecordBatch {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(keys.to_vec())),
                Arc::new(Float64Array::from(values.to_vec())),
            ],
        )
        .expect("batch")
    }

    /// Each run sees only its own rows and gives what planning the query
    /// afresh over the same rows gives, window functions, sorts and
    /// aggregates included.
    #[tokio::test]
    async fn a_prepared_query_equals_a_fresh_one_on_every_run() -> Result<()> {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Float64, false),
        ]));
        let sql = "SELECT k, sum(v) AS s, count(*) AS n, \
                   row_number() OVER (ORDER BY sum(v) DESC) AS r \
                   FROM t WHERE v > $1 GROUP BY k ORDER BY k";
        let params = || vec![ScalarValue::Float64(Some(0.5))];
        let prepared = Prepared::new(
            &crate::query::window_context(Default::default()),
            sql,
            &[("t", schema.clone())],
            params(),
        )
        .await?;
        let runs = [
            batch(&schema, &["a", "b", "a"], &[1.0, 2.0, 3.0]),
            batch(&schema, &["c"], &[0.1]),
            batch(&schema, &["b", "c", "c", "a"], &[5.0, 1.0, 2.0, 0.7]),
        ];
        for input in runs {
            let got = prepared.run(vec![input.clone()]).await?;
            let fresh = SessionContext::new();
            fresh.register_table(
                "t",
                Arc::new(MemTable::try_new(schema.clone(), vec![vec![input]])?),
            )?;
            let df = fresh.sql(sql).await?.with_param_values(params())?;
            let want_schema = df.schema().inner().clone();
            // One batch, as `run` gives (headers even when empty).
            let want = concat_batches(&want_schema, &df.collect().await?)?;
            assert_eq!(
                pretty_format_batches(&[got])?.to_string(),
                pretty_format_batches(&[want])?.to_string()
            );
        }
        Ok(())
    }
}
