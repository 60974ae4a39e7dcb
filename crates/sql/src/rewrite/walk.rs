//! The walk over a user's statement: every governed table reference becomes its governed view, every
//! name is resolved with PostgreSQL's scoping and written back quoted, and every construct the walk does
//! not know is refused (fail closed).

use std::collections::{BTreeMap, BTreeSet};

use sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentClause, FunctionArguments, Ident, JoinConstraint,
    JoinOperator, NamedWindowExpr, ObjectName, OrderByKind, Query, Select, SelectFlavor, SelectItem,
    SelectItemQualifiedWildcardKind, SetExpr, SetOperator, TableAlias, TableFactor, TableWithJoins,
    WildcardAdditionalOptions, WindowFrameBound, WindowSpec, WindowType,
};

use crate::rewrite::Rewriter;
use crate::rewrite::ast::{fold, fold_name, qident};
use crate::rewrite::error::{RewriteError, not_allowed, unsupported};
use crate::rewrite::filter::{Operation, TableFilter, TableName};
use crate::rewrite::functions::{
    FnContext, allowed_binary, allowed_function, allowed_table_function, allowed_type, allowed_unary,
};
use crate::rewrite::policy::{AppliedFilter, governed_view};

/// A relation visible at one query level.
#[derive(Debug, Clone)]
pub(crate) struct Rel {
    /// The name it is referred to by (alias or table name), folded.
    pub refname: String,
    pub kind: RelKind,
}

#[derive(Debug, Clone)]
pub(crate) enum RelKind {
    /// A governed table: which of its columns may be read, and all it has.
    Governed {
        table: TableName,
        readable: BTreeSet<String>,
        all: BTreeSet<String>,
        /// Referenced without an alias, so `schema.table.column` may name its columns.
        unaliased: bool,
    },
    /// A CTE, derived table, function or join alias: its columns are already governed.
    Other,
}

/// One query level: the CTE names it declares and the relations of its FROM clause.
#[derive(Debug, Default)]
pub(crate) struct Level {
    pub ctes: Vec<String>,
    pub rels: Vec<Rel>,
    /// Output column names, which a bare name in ORDER BY may mean.
    pub outputs: Vec<String>,
}

/// What a one-part relation name means.
enum Resolved {
    Cte(String),
    Table(TableName),
}

/// State of one statement's walk.
pub(crate) struct Walker<'r> {
    pub rw: &'r Rewriter<'r>,
    pub levels: Vec<Level>,
    depth: usize,
    pub ctx: FnContext,
    /// Where the stack stood when the walk began, to bound the stack the walk may use.
    stack_base: usize,
    pub applied: Vec<AppliedFilter>,
    pub tables: BTreeSet<TableName>,
    cache: BTreeMap<(TableName, Operation), Option<TableFilter>>,
    /// For a query whose own SELECT reads one table and only compares its columns with constants, those
    /// columns (see [`constant_comparisons`]): that table's view needs no optimisation fence if they are
    /// all plain columns of it.
    pub unfenced: Option<BTreeSet<String>>,
}

type R = Result<(), RewriteError>;

impl<'r> Walker<'r> {
    pub fn new(rw: &'r Rewriter<'r>, ctx: FnContext) -> Self {
        Walker {
            rw,
            levels: vec![Level::default()],
            depth: 0,
            ctx,
            stack_base: stack_position(),
            applied: vec![],
            tables: BTreeSet::new(),
            cache: BTreeMap::new(),
            unfenced: None,
        }
    }

    /// Counts one level of recursion; the walk refuses past the bound instead of overflowing the stack.
    /// Frame sizes differ between builds (a debug frame of the expression walk is ~10 KiB), so the
    /// stack actually used is bounded too, not only the level count.
    fn enter(&mut self) -> R {
        self.depth += 1;
        let used = self.stack_base.abs_diff(stack_position());
        if self.depth > self.rw.max_depth || used > self.rw.max_stack {
            return Err(RewriteError::TooDeep(self.rw.max_depth));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    fn top(&mut self) -> Result<&mut Level, RewriteError> {
        self.levels.last_mut().ok_or_else(|| RewriteError::Internal("no query level".into()))
    }

    /// Runs `f` in a fresh query level.
    fn in_level(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        self.levels.push(Level::default());
        let r = f(self);
        self.levels.pop();
        r
    }

    /// The filter for a table and operation, asked once per statement so every reference sees the same.
    pub fn filter(&mut self, table: &TableName, op: Operation) -> Option<TableFilter> {
        self.cache.entry((table.clone(), op)).or_insert_with(|| (self.rw.filters)(table, op)).clone()
    }

    /// Resolves a table name to a governed table (never a CTE): catalog, system schemas, search path.
    pub fn resolve_table(&self, name: &ObjectName) -> Result<TableName, RewriteError> {
        let parts = fold_name(name).ok_or_else(|| unsupported(format!("relation name {name}")))?;
        match parts.as_slice() {
            [table] => {
                for schema in &self.rw.search_path {
                    let candidate = TableName::new(schema.clone(), table.clone());
                    if self.rw.catalog.table(&candidate).is_some() {
                        return Ok(candidate);
                    }
                }
                // PostgreSQL searches pg_catalog before the path, so `pg_class` alone is a system catalog.
                if table.starts_with("pg_") {
                    return Err(system_catalog(table));
                }
                Err(RewriteError::UndefinedTable(table.clone()))
            }
            [schema, table] => {
                if is_system_schema(schema) {
                    return Err(system_catalog(&format!("{schema}.{table}")));
                }
                let candidate = TableName::new(schema.clone(), table.clone());
                if self.rw.catalog.table(&candidate).is_some() {
                    Ok(candidate)
                } else {
                    Err(RewriteError::UndefinedTable(format!("{schema}.{table}")))
                }
            }
            _ => Err(unsupported(format!("relation names with a database part ({name})"))),
        }
    }

    /// A FROM-clause name: a CTE in scope (one-part names only, innermost first) or a governed table.
    fn resolve_relation(&self, name: &ObjectName) -> Result<Resolved, RewriteError> {
        if let Some(parts) = fold_name(name)
            && let [single] = parts.as_slice()
            && self.levels.iter().rev().any(|l| l.ctes.contains(single))
        {
            return Ok(Resolved::Cte(single.clone()));
        }
        self.resolve_table(name).map(Resolved::Table)
    }

    // ---------------------------------------------------------------- queries

    pub fn query(&mut self, q: &mut Query) -> R {
        self.enter()?;
        self.levels.push(Level::default());
        let r = self.query_inner(q);
        self.levels.pop();
        self.leave();
        r
    }

    fn query_inner(&mut self, q: &mut Query) -> R {
        if !q.locks.is_empty() {
            return Err(not_allowed("SELECT ... FOR UPDATE/SHARE is not allowed through the gateway"));
        }
        if q.for_clause.is_some() || q.settings.is_some() || q.format_clause.is_some() || !q.pipe_operators.is_empty() {
            return Err(unsupported("query clause"));
        }
        if let Some(with) = &mut q.with {
            let recursive = with.recursive;
            if recursive {
                // In WITH RECURSIVE every name of the list is visible in every body.
                let names: Vec<String> = with.cte_tables.iter().map(|c| fold(&c.alias.name)).collect();
                self.top()?.ctes.extend(names);
            }
            for cte in &mut with.cte_tables {
                if cte.from.is_some() {
                    return Err(unsupported("CTE FROM clause"));
                }
                let name = fold(&cte.alias.name);
                canonical_alias(&mut cte.alias)?;
                // A non-recursive CTE's body sees only earlier CTEs: `WITH orders AS (SELECT * FROM
                // orders)` reads the table, not itself.
                self.query(&mut cte.query)?;
                if !recursive {
                    self.top()?.ctes.push(name);
                }
            }
        }
        self.set_expr(&mut q.body, true)?;
        if let Some(order_by) = &mut q.order_by {
            if order_by.interpolate.is_some() {
                return Err(unsupported("ORDER BY INTERPOLATE"));
            }
            match &mut order_by.kind {
                OrderByKind::Expressions(list) => {
                    for item in list {
                        if item.with_fill.is_some() {
                            return Err(unsupported("ORDER BY WITH FILL"));
                        }
                        self.order_expr(&mut item.expr)?;
                    }
                }
                OrderByKind::All(_) => return Err(unsupported("ORDER BY ALL")),
            }
        }
        if let Some(limit) = &mut q.limit_clause {
            match limit {
                sqlparser::ast::LimitClause::LimitOffset { limit, offset, limit_by } => {
                    if !limit_by.is_empty() {
                        return Err(unsupported("LIMIT BY"));
                    }
                    if let Some(l) = limit {
                        self.expr(l)?;
                    }
                    if let Some(o) = offset {
                        self.expr(&mut o.value)?;
                    }
                }
                sqlparser::ast::LimitClause::OffsetCommaLimit { .. } => {
                    return Err(unsupported("LIMIT offset, count"));
                }
            }
        }
        if let Some(fetch) = &mut q.fetch
            && let Some(n) = &mut fetch.quantity
        {
            self.expr(n)?;
        }
        Ok(())
    }

    /// A bare name in ORDER BY may be an output column (`SELECT a AS x ... ORDER BY x`).
    fn order_expr(&mut self, e: &mut Expr) -> R {
        if let Expr::Identifier(ident) = e {
            let name = fold(ident);
            if self.levels.last().is_some_and(|l| l.outputs.contains(&name)) {
                *ident = qident(&name);
                return Ok(());
            }
        }
        self.expr(e)
    }

    fn set_expr(&mut self, body: &mut SetExpr, top: bool) -> R {
        self.enter()?;
        let r = self.set_expr_inner(body, top);
        self.leave();
        r
    }

    fn set_expr_inner(&mut self, body: &mut SetExpr, top: bool) -> R {
        match body {
            // The query's own SELECT shares its level, so ORDER BY sees its FROM; operands of a set
            // operation each get their own.
            SetExpr::Select(select) if top => self.select(select),
            SetExpr::Select(select) => self.in_level(|w| w.select(select)),
            SetExpr::Query(q) => self.query(q),
            SetExpr::SetOperation { left, op, right, .. } => {
                if matches!(op, SetOperator::Minus) {
                    return Err(unsupported("MINUS"));
                }
                self.set_expr(left, false)?;
                self.set_expr(right, false)?;
                if top {
                    let outputs = leftmost_outputs(left);
                    self.top()?.outputs = outputs;
                }
                Ok(())
            }
            SetExpr::Values(values) => {
                for row in &mut values.rows {
                    for e in &mut row.content {
                        self.expr(e)?;
                    }
                }
                Ok(())
            }
            SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
                Err(not_allowed("data-modifying statements inside a query are not allowed"))
            }
            SetExpr::Table(_) => Err(unsupported("TABLE statement")),
        }
    }

    pub fn select(&mut self, s: &mut Select) -> R {
        if s.into.is_some() {
            return Err(not_allowed("SELECT INTO is not allowed through the gateway"));
        }
        if s.top.is_some()
            || s.select_modifiers.is_some()
            || !s.optimizer_hints.is_empty()
            || s.exclude.is_some()
            || !s.lateral_views.is_empty()
            || s.prewhere.is_some()
            || !s.connect_by.is_empty()
            || !s.cluster_by.is_empty()
            || !s.distribute_by.is_empty()
            || !s.sort_by.is_empty()
            || s.qualify.is_some()
            || s.value_table_mode.is_some()
            || !matches!(s.flavor, SelectFlavor::Standard)
        {
            return Err(unsupported("SELECT clause outside PostgreSQL's"));
        }
        for twj in &mut s.from {
            self.table_with_joins(twj)?;
        }
        if let Some(sqlparser::ast::Distinct::On(exprs)) = &mut s.distinct {
            for e in exprs {
                self.expr(e)?;
            }
        }
        let mut outputs = vec![];
        for item in &mut s.projection {
            if let Some(name) = self.select_item(item)? {
                outputs.push(name);
            }
        }
        self.top()?.outputs = outputs;
        if let Some(e) = &mut s.selection {
            self.expr(e)?;
        }
        match &mut s.group_by {
            sqlparser::ast::GroupByExpr::Expressions(exprs, modifiers) => {
                if !modifiers.is_empty() {
                    return Err(unsupported("GROUP BY modifiers"));
                }
                for e in exprs {
                    self.order_expr(e)?;
                }
            }
            sqlparser::ast::GroupByExpr::All(_) => return Err(unsupported("GROUP BY ALL")),
        }
        if let Some(e) = &mut s.having {
            self.expr(e)?;
        }
        for def in &mut s.named_window {
            def.0 = qident(&fold(&def.0));
            match &mut def.1 {
                NamedWindowExpr::WindowSpec(spec) => self.window_spec(spec)?,
                NamedWindowExpr::NamedWindow(id) => *id = qident(&fold(id)),
            }
        }
        Ok(())
    }

    /// Walks a select item; returns the output name it defines, if any.
    fn select_item(&mut self, item: &mut SelectItem) -> Result<Option<String>, RewriteError> {
        match item {
            SelectItem::UnnamedExpr(e) => {
                let name = match &*e {
                    Expr::Identifier(i) => Some(fold(i)),
                    Expr::CompoundIdentifier(parts) => parts.last().map(fold),
                    _ => None,
                };
                self.expr(e)?;
                Ok(name)
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                self.expr(expr)?;
                let name = fold(alias);
                *alias = qident(&name);
                Ok(Some(name))
            }
            SelectItem::ExprWithAliases { .. } => Err(unsupported("multiple aliases")),
            SelectItem::Wildcard(opts) => {
                plain_wildcard(opts)?;
                Ok(None)
            }
            SelectItem::QualifiedWildcard(kind, opts) => {
                plain_wildcard(opts)?;
                match kind {
                    SelectItemQualifiedWildcardKind::ObjectName(name) => self.qualified_wildcard(name)?,
                    SelectItemQualifiedWildcardKind::Expr(_) => {
                        return Err(unsupported("expression wildcard"));
                    }
                }
                Ok(None)
            }
        }
    }

    /// `t.*` or `schema.t.*`: the qualifier must be a relation in scope; a schema-qualified one is
    /// rewritten to the view's alias.
    fn qualified_wildcard(&mut self, name: &mut ObjectName) -> R {
        let parts = fold_name(name).ok_or_else(|| unsupported("wildcard qualifier"))?;
        let qualifier = match parts.as_slice() {
            [q] => q.clone(),
            [schema, table] => {
                self.unaliased_governed(schema, table)?;
                table.clone()
            }
            _ => return Err(unsupported("wildcard qualifier with more than two parts")),
        };
        *name = ObjectName::from(vec![qident(&qualifier)]);
        Ok(())
    }

    /// Checks that `schema.table` is an unaliased governed relation in scope (so `schema.table.x` may
    /// become `table.x`).
    fn unaliased_governed(&self, schema: &str, table: &str) -> R {
        let target = TableName::new(schema, table);
        let found = self
            .levels
            .iter()
            .rev()
            .flat_map(|l| l.rels.iter())
            .any(|r| matches!(&r.kind, RelKind::Governed { table: t, unaliased: true, .. } if *t == target));
        if found {
            Ok(())
        } else {
            Err(RewriteError::UndefinedTable(format!("missing FROM-clause entry for table {schema}.{table}")))
        }
    }

    // ---------------------------------------------------------------- FROM

    pub fn table_with_joins(&mut self, twj: &mut TableWithJoins) -> R {
        self.enter()?;
        let r = self.table_with_joins_inner(twj);
        self.leave();
        r
    }

    fn table_with_joins_inner(&mut self, twj: &mut TableWithJoins) -> R {
        self.table_factor(&mut twj.relation)?;
        for join in &mut twj.joins {
            if join.global {
                return Err(unsupported("GLOBAL JOIN"));
            }
            self.table_factor(&mut join.relation)?;
            match &mut join.join_operator {
                JoinOperator::Join(c)
                | JoinOperator::Inner(c)
                | JoinOperator::Left(c)
                | JoinOperator::LeftOuter(c)
                | JoinOperator::Right(c)
                | JoinOperator::RightOuter(c)
                | JoinOperator::FullOuter(c)
                | JoinOperator::CrossJoin(c) => self.join_constraint(c)?,
                _ => return Err(unsupported("join type")),
            }
        }
        Ok(())
    }

    fn join_constraint(&mut self, c: &mut JoinConstraint) -> R {
        match c {
            JoinConstraint::On(e) => self.expr(e),
            JoinConstraint::Using(names) => {
                for name in names {
                    let parts = fold_name(name).ok_or_else(|| unsupported("USING column"))?;
                    let [column] = parts.as_slice() else {
                        return Err(unsupported("qualified USING column"));
                    };
                    self.check_unqualified(column)?;
                    *name = ObjectName::from(vec![qident(column)]);
                }
                Ok(())
            }
            // NATURAL joins on the views' common columns, which are visible ones only.
            JoinConstraint::Natural | JoinConstraint::None => Ok(()),
        }
    }

    fn table_factor(&mut self, factor: &mut TableFactor) -> R {
        match factor {
            TableFactor::Table {
                name,
                alias,
                args,
                with_hints,
                version,
                with_ordinality,
                partitions,
                json_path,
                sample,
                index_hints,
            } => {
                if !with_hints.is_empty()
                    || version.is_some()
                    || !partitions.is_empty()
                    || json_path.is_some()
                    || sample.is_some()
                    || !index_hints.is_empty()
                {
                    return Err(unsupported("table modifiers (hints, sampling, versions)"));
                }
                if let Some(args) = args {
                    // `FROM generate_series(1, 3)`
                    let canonical = allowed_table_function(name)
                        .ok_or_else(|| RewriteError::FunctionNotAllowed(name.to_string()))?;
                    if args.settings.is_some() {
                        return Err(unsupported("table function settings"));
                    }
                    for arg in &mut args.args {
                        self.function_arg(arg)?;
                    }
                    *name = ObjectName::from(vec![Ident::new(canonical)]);
                    let _ = with_ordinality;
                    return self.other_rel(alias, None);
                }
                if *with_ordinality {
                    return Err(unsupported("WITH ORDINALITY on a table"));
                }
                match self.resolve_relation(name)? {
                    Resolved::Cte(cte) => {
                        *name = ObjectName::from(vec![qident(&cte)]);
                        self.other_rel(alias, Some(cte))
                    }
                    Resolved::Table(table) => {
                        let alias = alias.take();
                        *factor = self.governed_factor(table, alias)?;
                        Ok(())
                    }
                }
            }
            TableFactor::Derived { subquery, alias, sample, .. } => {
                if sample.is_some() {
                    return Err(unsupported("TABLESAMPLE"));
                }
                self.query(subquery)?;
                self.other_rel(alias, None)
            }
            TableFactor::Function { name, args, with_ordinality: _, alias, .. } => {
                let canonical =
                    allowed_table_function(name).ok_or_else(|| RewriteError::FunctionNotAllowed(name.to_string()))?;
                for arg in args {
                    self.function_arg(arg)?;
                }
                *name = ObjectName::from(vec![Ident::new(canonical)]);
                self.other_rel(alias, None)
            }
            TableFactor::UNNEST { alias, array_exprs, with_offset, with_offset_alias, .. } => {
                if *with_offset || with_offset_alias.is_some() {
                    return Err(unsupported("UNNEST WITH OFFSET"));
                }
                for e in array_exprs {
                    self.expr(e)?;
                }
                self.other_rel(alias, None)
            }
            TableFactor::NestedJoin { table_with_joins, alias } => {
                self.table_with_joins(table_with_joins)?;
                if alias.is_some() {
                    self.other_rel(alias, None)?;
                }
                Ok(())
            }
            _ => Err(unsupported("FROM item")),
        }
    }

    /// Registers a non-governed relation under its alias (or `default` name) and writes the alias back
    /// quoted.
    fn other_rel(&mut self, alias: &mut Option<TableAlias>, default: Option<String>) -> R {
        let refname = match alias {
            Some(a) => {
                let n = fold(&a.name);
                canonical_alias(a)?;
                Some(n)
            }
            None => default,
        };
        if let Some(refname) = refname {
            self.top()?.rels.push(Rel { refname, kind: RelKind::Other });
        }
        Ok(())
    }

    /// The governed view that replaces a reference to `table`, keeping the query's alias (or the table's
    /// name as alias).
    fn governed_factor(&mut self, table: TableName, alias: Option<TableAlias>) -> Result<TableFactor, RewriteError> {
        let def = self.rw.catalog.table(&table).ok_or_else(|| RewriteError::UndefinedTable(table.to_string()))?.clone();
        if alias.as_ref().is_some_and(|a| !a.columns.is_empty()) {
            // Column aliases are positional and the view's positions differ from the table's.
            return Err(unsupported("column aliases on a governed table"));
        }
        let unaliased = alias.is_none();
        let refname = alias.as_ref().map(|a| fold(&a.name)).unwrap_or_else(|| table.name.clone());
        let filter = self
            .filter(&table, Operation::Select)
            .filter(|f| !f.permissive.is_empty())
            .ok_or_else(|| RewriteError::TableDenied(table.name.clone()))?;
        let (mut query, applied) = governed_view(&def, &filter, &refname, self.rw.fence)?;
        // The fence keeps a user's predicate from running on hidden rows, where an error could reveal them.
        // The query's own SELECT (level 1: no CTE, derived table, subquery or set operand) over this table alone,
        // whose WHERE only compares plain columns with constants, has no such predicate on an engine that types
        // the constants at planning: there a comparison with a constant neither fails nor tells anything on any
        // row. Without the fence PostgreSQL flattens the view and uses the comparisons for index scans, as native
        // row level security does with leakproof operators.
        if self.levels.len() == 2
            && (self.rw.comparisons_unfenced)(&table)
            && let Some(compared) = &self.unfenced
            && compared.is_subset(&plain_columns(&query))
        {
            query.limit_clause = None;
        }
        self.tables.insert(table.clone());
        self.applied.push(applied);
        self.top()?.rels.push(Rel {
            refname: refname.clone(),
            kind: RelKind::Governed {
                table,
                readable: filter.columns.iter().map(|c| c.name.clone()).collect(),
                all: def.columns.iter().map(|c| c.name.clone()).collect(),
                unaliased,
            },
        });
        Ok(TableFactor::Derived {
            lateral: false,
            subquery: Box::new(query),
            alias: Some(TableAlias { explicit: true, name: qident(&refname), columns: vec![], at: None }),
            sample: None,
        })
    }

    // ---------------------------------------------------------------- names

    /// An unqualified column name: an error if, at the innermost level where some governed relation
    /// has a column of that name, it is one the principal may not read. (The views would hide it anyway;
    /// this turns "does not exist" into the permission error PostgreSQL gives.)
    pub fn check_unqualified(&self, column: &str) -> R {
        for level in self.levels.iter().rev() {
            let mut resolved = false;
            for rel in &level.rels {
                if let RelKind::Governed { table, readable, all, .. } = &rel.kind
                    && all.contains(column)
                {
                    if !readable.contains(column) {
                        return Err(RewriteError::ColumnDenied {
                            table: table.name.clone(),
                            column: column.to_string(),
                        });
                    }
                    resolved = true;
                }
            }
            if resolved {
                return Ok(());
            }
        }
        Ok(())
    }

    /// `q.column` where `q` names a relation in scope (innermost first).
    fn check_qualified(&self, qualifier: &str, column: &str) -> R {
        let rel = self.levels.iter().rev().find_map(|l| l.rels.iter().rev().find(|r| r.refname == qualifier));
        if let Some(Rel { kind: RelKind::Governed { table, readable, all, .. }, .. }) = rel
            && all.contains(column)
            && !readable.contains(column)
        {
            return Err(RewriteError::ColumnDenied { table: table.name.clone(), column: column.to_string() });
        }
        Ok(())
    }

    fn column_ref(&mut self, e: &mut Expr) -> R {
        match e {
            Expr::Identifier(ident) => {
                if ident.quote_style.is_none() && ident.value.eq_ignore_ascii_case("default") {
                    // The DEFAULT keyword in VALUES: it would become a column name once quoted.
                    return Err(unsupported("DEFAULT in VALUES"));
                }
                let name = fold(ident);
                self.check_unqualified(&name)?;
                *ident = qident(&name);
                Ok(())
            }
            Expr::CompoundIdentifier(parts) => {
                let folded: Vec<String> = parts.iter().map(fold).collect();
                let new_parts = match folded.as_slice() {
                    [q, c] => {
                        self.check_qualified(q, c)?;
                        vec![qident(q), qident(c)]
                    }
                    [schema, table, c] => {
                        // `sales.orders.amount` names the view's column as `orders.amount`.
                        self.unaliased_governed(schema, table)?;
                        self.check_qualified(table, c)?;
                        vec![qident(table), qident(c)]
                    }
                    _ => return Err(unsupported("column reference with more than three parts")),
                };
                *parts = new_parts;
                Ok(())
            }
            _ => Err(RewriteError::Internal("not a column reference".into())),
        }
    }

    // ---------------------------------------------------------------- expressions

    pub fn expr(&mut self, e: &mut Expr) -> R {
        self.enter()?;
        let r = self.expr_inner(e);
        self.leave();
        r
    }

    fn exprs(&mut self, list: &mut [Expr]) -> R {
        for e in list {
            self.expr(e)?;
        }
        Ok(())
    }

    fn expr_inner(&mut self, e: &mut Expr) -> R {
        match e {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => self.column_ref(e),
            Expr::Value(_) => Ok(()),
            Expr::Nested(inner)
            | Expr::IsNull(inner)
            | Expr::IsNotNull(inner)
            | Expr::IsTrue(inner)
            | Expr::IsNotTrue(inner)
            | Expr::IsFalse(inner)
            | Expr::IsNotFalse(inner)
            | Expr::IsUnknown(inner)
            | Expr::IsNotUnknown(inner) => self.expr(inner),
            Expr::UnaryOp { op, expr } => {
                if !allowed_unary(op) {
                    return Err(not_allowed(format!("operator {op} is not allowed")));
                }
                self.expr(expr)
            }
            Expr::BinaryOp { left, op, right } => {
                if !allowed_binary(op) {
                    return Err(not_allowed(format!("operator {op} is not allowed")));
                }
                self.expr(left)?;
                self.expr(right)
            }
            Expr::IsDistinctFrom(a, b) | Expr::IsNotDistinctFrom(a, b) => {
                self.expr(a)?;
                self.expr(b)
            }
            Expr::InList { expr, list, .. } => {
                self.expr(expr)?;
                self.exprs(list)
            }
            Expr::InSubquery { expr, subquery, .. } => {
                self.expr(expr)?;
                self.query(subquery)
            }
            Expr::Between { expr, low, high, .. } => {
                self.expr(expr)?;
                self.expr(low)?;
                self.expr(high)
            }
            Expr::Like { expr, pattern, any: false, .. }
            | Expr::ILike { expr, pattern, any: false, .. }
            | Expr::SimilarTo { expr, pattern, .. } => {
                self.expr(expr)?;
                self.expr(pattern)
            }
            Expr::AnyOp { left, compare_op, right, .. } | Expr::AllOp { left, compare_op, right } => {
                if !allowed_binary(compare_op) {
                    return Err(not_allowed(format!("operator {compare_op} is not allowed")));
                }
                self.expr(left)?;
                self.expr(right)
            }
            Expr::Cast { expr, data_type, format: None, .. } => {
                if !allowed_type(data_type) {
                    return Err(not_allowed(format!("cast to {data_type} is not allowed")));
                }
                self.expr(expr)
            }
            Expr::TypedString(ts) => {
                if !allowed_type(&ts.data_type) || ts.uses_odbc_syntax {
                    return Err(not_allowed(format!("literal of type {} is not allowed", ts.data_type)));
                }
                Ok(())
            }
            Expr::Case { operand, conditions, else_result, .. } => {
                if let Some(op) = operand {
                    self.expr(op)?;
                }
                for arm in conditions {
                    self.expr(&mut arm.condition)?;
                    self.expr(&mut arm.result)?;
                }
                if let Some(r) = else_result {
                    self.expr(r)?;
                }
                Ok(())
            }
            Expr::Exists { subquery, .. } | Expr::Subquery(subquery) => self.query(subquery),
            Expr::Function(f) => self.function(f),
            _ => self.expr_more(e),
        }
    }

    /// The less common expressions, apart so the common path's stack frame stays small.
    #[inline(never)]
    fn expr_more(&mut self, e: &mut Expr) -> R {
        match e {
            Expr::AtTimeZone { timestamp, time_zone } => {
                self.expr(timestamp)?;
                self.expr(time_zone)
            }
            Expr::Extract { expr, .. } => self.expr(expr),
            Expr::Ceil { expr, .. } | Expr::Floor { expr, .. } => self.expr(expr),
            Expr::Position { expr, r#in } => {
                self.expr(expr)?;
                self.expr(r#in)
            }
            Expr::Substring { expr, substring_from, substring_for, .. } => {
                self.expr(expr)?;
                if let Some(x) = substring_from {
                    self.expr(x)?;
                }
                if let Some(x) = substring_for {
                    self.expr(x)?;
                }
                Ok(())
            }
            Expr::Trim { expr, trim_what, trim_characters, .. } => {
                self.expr(expr)?;
                if let Some(x) = trim_what {
                    self.expr(x)?;
                }
                if let Some(list) = trim_characters {
                    self.exprs(list)?;
                }
                Ok(())
            }
            Expr::Overlay { expr, overlay_what, overlay_from, overlay_for } => {
                self.expr(expr)?;
                self.expr(overlay_what)?;
                self.expr(overlay_from)?;
                if let Some(x) = overlay_for {
                    self.expr(x)?;
                }
                Ok(())
            }
            Expr::Collate { expr, collation } => {
                let parts = fold_name(collation).ok_or_else(|| unsupported("collation name"))?;
                let [name] = parts.as_slice() else {
                    return Err(unsupported("schema-qualified collation"));
                };
                *collation = ObjectName::from(vec![qident(name)]);
                self.expr(expr)
            }
            Expr::GroupingSets(sets) | Expr::Cube(sets) | Expr::Rollup(sets) => {
                for set in sets {
                    self.exprs(set)?;
                }
                Ok(())
            }
            Expr::Tuple(list) => self.exprs(list),
            Expr::Array(array) => self.exprs(&mut array.elem),
            Expr::Interval(interval) => self.expr(&mut interval.value),
            Expr::CompoundFieldAccess { root, access_chain } => {
                self.expr(root)?;
                for access in access_chain {
                    match access {
                        sqlparser::ast::AccessExpr::Dot(e) => {
                            // A field name of a composite value, not a column: keep as written but
                            // refuse anything that is not a plain name.
                            if !matches!(e, Expr::Identifier(_)) {
                                return Err(unsupported("field access"));
                            }
                        }
                        sqlparser::ast::AccessExpr::Subscript(sub) => match sub {
                            sqlparser::ast::Subscript::Index { index } => self.expr(index)?,
                            sqlparser::ast::Subscript::Slice { lower_bound, upper_bound, stride } => {
                                for b in [lower_bound, upper_bound, stride].into_iter().flatten() {
                                    self.expr(b)?;
                                }
                            }
                        },
                    }
                }
                Ok(())
            }
            other => Err(unsupported(format!("expression `{}`", short(other)))),
        }
    }

    fn function(&mut self, f: &mut Function) -> R {
        if f.uses_odbc_syntax || !matches!(f.parameters, FunctionArguments::None) || f.null_treatment.is_some() {
            return Err(unsupported(format!("function call syntax of {}", f.name)));
        }
        // ARRAY(SELECT ...) is syntax, not a function.
        if let FunctionArguments::Subquery(sub) = &mut f.args {
            let is_array = fold_name(&f.name).is_some_and(|p| p == ["array"]);
            if !is_array {
                return Err(RewriteError::FunctionNotAllowed(f.name.to_string()));
            }
            return self.query(sub);
        }
        let canonical =
            allowed_function(&f.name, self.ctx).ok_or_else(|| RewriteError::FunctionNotAllowed(f.name.to_string()))?;
        f.name = ObjectName::from(vec![Ident::new(canonical)]);
        if let FunctionArguments::List(list) = &mut f.args {
            for arg in &mut list.args {
                self.function_arg(arg)?;
            }
            for clause in &mut list.clauses {
                match clause {
                    FunctionArgumentClause::OrderBy(items) => {
                        for item in items {
                            self.expr(&mut item.expr)?;
                        }
                    }
                    _ => return Err(unsupported("function argument clause")),
                }
            }
        }
        if let Some(filter) = &mut f.filter {
            self.expr(filter)?;
        }
        match &mut f.over {
            Some(WindowType::WindowSpec(spec)) => self.window_spec(spec)?,
            Some(WindowType::NamedWindow(id)) => *id = qident(&fold(id)),
            None => {}
        }
        for item in &mut f.within_group {
            self.expr(&mut item.expr)?;
        }
        Ok(())
    }

    fn function_arg(&mut self, arg: &mut FunctionArg) -> R {
        let a = match arg {
            FunctionArg::Unnamed(a) => a,
            FunctionArg::Named { arg, .. } => arg,
            FunctionArg::ExprNamed { .. } => return Err(unsupported("named argument expression")),
        };
        match a {
            FunctionArgExpr::Expr(e) => self.expr(e),
            FunctionArgExpr::Wildcard => Ok(()),
            FunctionArgExpr::QualifiedWildcard(name) => self.qualified_wildcard(name),
            FunctionArgExpr::WildcardWithOptions(_) => Err(unsupported("wildcard options")),
        }
    }

    fn window_spec(&mut self, spec: &mut WindowSpec) -> R {
        if let Some(name) = &mut spec.window_name {
            *name = qident(&fold(name));
        }
        self.exprs(&mut spec.partition_by)?;
        for item in &mut spec.order_by {
            self.expr(&mut item.expr)?;
        }
        if let Some(frame) = &mut spec.window_frame {
            for bound in std::iter::once(&mut frame.start_bound).chain(frame.end_bound.as_mut()) {
                if let WindowFrameBound::Preceding(Some(e)) | WindowFrameBound::Following(Some(e)) = bound {
                    self.expr(e)?;
                }
            }
        }
        Ok(())
    }
}

/// The columns a governed view shows as they are stored (`"table"."c" AS "c"`), not masked or cell-ruled.
fn plain_columns(view: &Query) -> BTreeSet<String> {
    let SetExpr::Select(select) = view.body.as_ref() else { return BTreeSet::new() };
    select
        .projection
        .iter()
        .filter_map(|item| match item {
            SelectItem::ExprWithAlias { expr: Expr::CompoundIdentifier(parts), alias } => match parts.as_slice() {
                [_, column] if fold(column) == fold(alias) => Some(fold(alias)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The columns `q`'s WHERE compares with constants, when `q` is a plain SELECT over one relation (no join, no
/// HAVING) whose WHERE is absent or an AND of `column <comparison> constant`, `column [NOT] BETWEEN constant AND
/// constant`, `column [NOT] IN (constants)` and `column IS [NOT] NULL`; `None` for any other shape (see
/// [`is_constant`]).
pub(crate) fn constant_comparisons(q: &Query) -> Option<BTreeSet<String>> {
    let SetExpr::Select(select) = q.body.as_ref() else { return None };
    let [from] = select.from.as_slice() else { return None };
    if !from.joins.is_empty() || !matches!(from.relation, TableFactor::Table { .. }) || select.having.is_some() {
        return None;
    }
    let mut columns = BTreeSet::new();
    if let Some(selection) = &select.selection {
        compared_columns(selection, &mut columns)?;
    }
    Some(columns)
}

fn compared_columns(e: &Expr, columns: &mut BTreeSet<String>) -> Option<()> {
    use sqlparser::ast::BinaryOperator as Op;
    let column = match e {
        Expr::Nested(inner) => return compared_columns(inner, columns),
        Expr::BinaryOp { left, op: Op::And, right } => {
            compared_columns(left, columns)?;
            return compared_columns(right, columns);
        }
        Expr::BinaryOp { left, op: Op::Eq | Op::NotEq | Op::Lt | Op::LtEq | Op::Gt | Op::GtEq, right } => {
            match (is_constant(left), is_constant(right)) {
                (false, true) => column_name(left)?,
                (true, false) => column_name(right)?,
                _ => return None,
            }
        }
        Expr::Between { expr, low, high, .. } if is_constant(low) && is_constant(high) => column_name(expr)?,
        Expr::InList { expr, list, .. } if !list.is_empty() && list.iter().all(is_constant) => column_name(expr)?,
        Expr::IsNull(expr) | Expr::IsNotNull(expr) => column_name(expr)?,
        _ => return None,
    };
    columns.insert(column);
    Some(())
}

/// The column a bare or qualified name refers to (folded); in a SELECT over one relation, a column of it.
fn column_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(i) => Some(fold(i)),
        Expr::CompoundIdentifier(parts) => parts.last().map(fold),
        Expr::Nested(inner) => column_name(inner),
        _ => None,
    }
}

/// A literal or a parameter (bound as a literal), possibly signed. Not a typed literal or a cast: PostgreSQL
/// gives an untyped literal the column's type, while a typed one may make it cast the column, and a cast can fail
/// on some stored values (a date beyond timestamp's range).
fn is_constant(e: &Expr) -> bool {
    use sqlparser::ast::UnaryOperator;
    match e {
        Expr::Value(_) => true,
        Expr::Nested(inner) => is_constant(inner),
        Expr::UnaryOp { op: UnaryOperator::Minus | UnaryOperator::Plus, expr } => is_constant(expr),
        _ => false,
    }
}

/// An address in the current stack frame (stack growth direction does not matter: the distance is used).
#[inline(never)]
fn stack_position() -> usize {
    let marker = 0u8;
    std::hint::black_box(&marker) as *const u8 as usize
}

/// Writes a table alias back quoted (and its column names).
fn canonical_alias(alias: &mut TableAlias) -> R {
    if alias.at.is_some() {
        return Err(unsupported("alias AT"));
    }
    alias.name = qident(&fold(&alias.name));
    for c in &mut alias.columns {
        if c.data_type.is_some() {
            return Err(unsupported("typed alias columns"));
        }
        c.name = qident(&fold(&c.name));
    }
    Ok(())
}

fn plain_wildcard(opts: &WildcardAdditionalOptions) -> R {
    if opts.opt_ilike.is_some()
        || opts.opt_exclude.is_some()
        || opts.opt_except.is_some()
        || opts.opt_replace.is_some()
        || opts.opt_rename.is_some()
        || opts.opt_alias.is_some()
    {
        return Err(unsupported("wildcard options"));
    }
    Ok(())
}

fn leftmost_outputs(body: &SetExpr) -> Vec<String> {
    match body {
        SetExpr::Select(s) => s
            .projection
            .iter()
            .filter_map(|item| match item {
                SelectItem::ExprWithAlias { alias, .. } => Some(fold(alias)),
                SelectItem::UnnamedExpr(Expr::Identifier(i)) => Some(fold(i)),
                SelectItem::UnnamedExpr(Expr::CompoundIdentifier(p)) => p.last().map(fold),
                _ => None,
            })
            .collect(),
        SetExpr::SetOperation { left, .. } => leftmost_outputs(left),
        SetExpr::Query(q) => leftmost_outputs(&q.body),
        _ => vec![],
    }
}

pub(crate) fn is_system_schema(schema: &str) -> bool {
    schema == "information_schema" || schema.starts_with("pg_")
}

fn system_catalog(name: &str) -> RewriteError {
    not_allowed(format!("system catalog {name} is not accessible through the gateway"))
}

/// The start of an expression's text for an error message (bounded: the input may be large).
fn short(e: &Expr) -> String {
    let text = e.to_string();
    if text.chars().count() > 60 { format!("{}...", text.chars().take(60).collect::<String>()) } else { text }
}
