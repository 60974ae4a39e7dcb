//! The governed view's optimisation fence on the embedded engine.
//!
//! A governed view with a row filter ends in `OFFSET 0` (see `rewrite::policy::governed_view`): on PostgreSQL that
//! keeps a user's predicates above the row filter, so they never run on a row the user may not see, where an error
//! (`1 / (CASE WHEN region = 'US' THEN 0 ELSE 1 END)`) would tell the user that the row exists and what it holds.
//! DataFusion's optimiser drops a limit that skips nothing and fetches everything, pushes the predicates above
//! it down, and evaluates the row filter and the user's predicate together on every row. So here the statement's
//! `OFFSET 0` becomes a [`Fence`]: a plan node no predicate, projection or dynamic filter is moved through, planned
//! as a [`FenceExec`] that passes its input's batches on unchanged.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::common::{DFSchemaRef, Result, internal_err};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::logical_plan::{FetchType, Limit, SkipType};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, ReplaceChildrenOptions,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use datafusion::prelude::SessionConfig;

/// A session state whose planner keeps fences: every DataFusion context of this crate that runs rewritten SQL is
/// built from one.
pub(crate) fn session_state(config: SessionConfig) -> SessionState {
    SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_query_planner(Arc::new(FencingPlanner))
        .build()
}

/// `plan` with each `OFFSET 0` (a limit skipping nothing and fetching everything) replaced by a [`Fence`], in
/// subqueries too.
pub(crate) fn fenced(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| match node {
        LogicalPlan::Limit(limit) if is_offset_zero(&limit)? => {
            let input = Arc::unwrap_or_clone(limit.input);
            Ok(Transformed::yes(LogicalPlan::Extension(Extension { node: Arc::new(Fence { input }) })))
        }
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}

fn is_offset_zero(limit: &Limit) -> Result<bool> {
    Ok(matches!(limit.get_skip_type()?, SkipType::Literal(0))
        && matches!(limit.get_fetch_type()?, FetchType::Literal(None)))
}

/// A logical node that passes its input on and that DataFusion's optimiser cannot see through: it pushes no
/// predicate below it (the default of [`UserDefinedLogicalNodeCore::prevent_predicate_push_down_columns`] names
/// every column); only the columns its parents use are read below it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
struct Fence {
    input: LogicalPlan,
}

impl UserDefinedLogicalNodeCore for Fence {
    fn name(&self) -> &str {
        "LakegateFence"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        self.input.schema()
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "LakegateFence")
    }

    /// The columns asked of the fence are the same columns of its input: without this the optimiser would read
    /// every column of the table under a fence (three times the time of `count(*), sum(amount)` over a million
    /// rows of Parquet).
    fn necessary_children_exprs(&self, output_columns: &[usize]) -> Option<Vec<Vec<usize>>> {
        Some(vec![output_columns.to_vec()])
    }

    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, mut inputs: Vec<LogicalPlan>) -> Result<Self> {
        match (inputs.pop(), inputs.is_empty()) {
            (Some(input), true) => Ok(Fence { input }),
            _ => internal_err!("LakegateFence takes one input"),
        }
    }
}

/// The default query planner, with fences planned as [`FenceExec`].
#[derive(Debug)]
struct FencingPlanner;

#[async_trait]
impl QueryPlanner for FencingPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(FencePlanner)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}

struct FencePlanner;

#[async_trait]
impl ExtensionPlanner for FencePlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        if node.as_any().downcast_ref::<Fence>().is_none() {
            return Ok(None);
        }
        match physical_inputs {
            [input] => Ok(Some(Arc::new(FenceExec::new(Arc::clone(input))))),
            _ => internal_err!("LakegateFence takes one input"),
        }
    }
}

/// The physical fence: its input's batches, unchanged. The physical optimiser's rules move filters (and the
/// dynamic filters of joins and top-k sorts) and projections only through nodes that say they may be: this one
/// keeps the defaults of [`ExecutionPlan`], which refuse both.
#[derive(Debug, Clone)]
struct FenceExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl FenceExec {
    fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = Arc::clone(input.properties());
        FenceExec { input, properties }
    }
}

impl DisplayAs for FenceExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LakegateFenceExec")
    }
}

impl ExecutionPlan for FenceExec {
    fn name(&self) -> &str {
        "LakegateFenceExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (Some(input), true) = (children.pop(), children.is_empty()) else {
            return internal_err!("LakegateFenceExec takes one input");
        };
        Ok(Arc::new(match options.children_properties {
            ChildrenPropertiesMode::Keep => FenceExec { input, properties: Arc::clone(&self.properties) },
            ChildrenPropertiesMode::Recompute => FenceExec::new(input),
        }))
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    /// A context whose table `t` holds `x` = 0 and 1: a row filter `x <> 0` hides the 0.
    fn context() -> SessionContext {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![0, 1]))]);
        let table = MemTable::try_new(schema, vec![vec![batch.expect("a batch")]]).expect("a table");
        let ctx = SessionContext::new_with_state(session_state(SessionConfig::new()));
        ctx.register_table("t", Arc::new(table)).expect("register");
        ctx
    }

    /// The one value of a statement answering one row with one integer.
    async fn answer(ctx: &SessionContext, sql: &str, fence: bool) -> Result<Option<i64>> {
        let plan = ctx.state().create_logical_plan(sql).await?;
        let plan = if fence { fenced(plan)? } else { plan };
        let batches = ctx.execute_logical_plan(plan).await?.collect().await?;
        let values = batches.iter().filter_map(|b| b.column(0).as_any().downcast_ref::<Int64Array>());
        Ok(values.flat_map(|a| a.iter().flatten()).next())
    }

    #[tokio::test]
    async fn a_predicate_above_the_fence_never_runs_on_a_row_the_filter_below_hides() {
        let ctx = context();
        for sql in [
            "SELECT count(*) AS n FROM (SELECT x FROM t WHERE x <> 0 OFFSET 0) v WHERE 1 / x = 1",
            "SELECT count(*) AS n FROM t a JOIN (SELECT x FROM t WHERE x <> 0 OFFSET 0) v ON 1 / v.x = a.x",
            "SELECT sum(1 / x) AS n FROM (SELECT x FROM t WHERE x <> 0 OFFSET 0) v",
            "SELECT count(*) AS n FROM t WHERE x IN (SELECT x FROM (SELECT x FROM t WHERE x <> 0 OFFSET 0) v \
             WHERE 1 / x = 1)",
        ] {
            let value = answer(&ctx, sql, true).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert_eq!(value, Some(1), "{sql}");
        }
        // What the fence is for: without it DataFusion divides by every x.
        let unfenced =
            answer(&ctx, "SELECT count(*) FROM (SELECT x FROM t WHERE x <> 0 OFFSET 0) v WHERE 1 / x = 1", false);
        assert!(unfenced.await.is_err_and(|e| e.to_string().contains("Divide by zero")));
    }

    #[tokio::test]
    async fn only_a_limit_that_skips_nothing_and_fetches_everything_becomes_a_fence() {
        let ctx = context();
        for (sql, fences) in [
            ("SELECT x FROM (SELECT x FROM t OFFSET 0) v", 1),
            ("SELECT x FROM (SELECT x FROM t OFFSET 1) v", 0),
            ("SELECT x FROM (SELECT x FROM t LIMIT 5) v", 0),
            ("SELECT a.x FROM (SELECT x FROM t OFFSET 0) a, (SELECT x FROM t OFFSET 0) b", 2),
        ] {
            let plan = fenced(ctx.state().create_logical_plan(sql).await.expect("plan")).expect("fenced");
            let shown = plan.display_indent().to_string();
            assert_eq!(shown.matches("LakegateFence").count(), fences, "{sql}:\n{shown}");
        }
    }
}
