//! INSERT, UPDATE and DELETE.
//!
//! * Rows a write may touch: UPDATE and DELETE get the operation's row filter (and the SELECT filter, as
//!   PostgreSQL applies SELECT policies to the rows a write reads) added to their WHERE. The user's own
//!   condition is only evaluated on rows that pass it (`CASE WHEN <filter> THEN <user's> ELSE FALSE END`),
//!   so a condition that raises an error cannot probe hidden rows.
//! * New rows (WITH CHECK): PostgreSQL raises an error when a new row violates the policy; silently dropping
//!   the row would report success for a write that did not happen. The check is compiled into the statement:
//!   a row that fails it evaluates `CAST(concat('lakegate: new row violates row-level security policy for
//!   table ...') AS BOOLEAN)`, which fails with that text in the backend's error message (SQLSTATE 22P02 on
//!   PostgreSQL, a cast error on DataFusion; the gateway maps a message starting with `lakegate:` back to
//!   42501). The statement aborts as a whole, so nothing is written. `concat` is stable, not immutable, so
//!   PostgreSQL does not fold the raise at plan time. It needs no cooperation from the caller: a caller that
//!   forgets a checking step cannot write a violating row.
//! * INSERT evaluates the check over its source: `INSERT INTO t (c..) SELECT CAST(n.c AS type).. FROM
//!   (<source>) AS n(c..) WHERE CASE WHEN <check over n> THEN TRUE ELSE <raise> END`. A check that names a
//!   column the INSERT does not set is refused (its value would be the column default, which the rewriter
//!   cannot see).
//! * UPDATE evaluates the check with each assigned column replaced by its new value's expression; since
//!   the SET expressions and the WHERE see the same old row, that is the new row. Volatile functions are
//!   refused in writes so the two evaluations agree.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use sqlparser::ast::{
    AssignmentTarget, DataType, Delete, Expr, FromTable, Insert, ObjectName, Query, SelectItem, SetExpr, TableAlias,
    TableAliasColumnDef, TableFactor, TableObject, TableWithJoins, Update, UpdateTableFromKind,
};

use crate::rewrite::ast::{
    and_all, bool_lit, call, case, cast, fold, fold_name, null_lit, qcolumn, qident, qname, string_lit,
};
use crate::rewrite::error::{RewriteError, unsupported};
use crate::rewrite::filter::{Condition, Operation, TableDef, TableFilter, TableName};
use crate::rewrite::policy::{AppliedFilter, parse_type, row_filter, template_query};
use crate::rewrite::walk::{Rel, RelKind, Walker};

/// The alias of an INSERT's source rows inside the checking wrapper.
const NEW_ROWS: &str = "lakegate_new";

/// The expression that aborts the statement when a new row fails the policy.
fn raise(table: &TableName) -> Expr {
    let message = format!("lakegate: new row violates row-level security policy for table \"{}\"", table.name);
    cast(call("concat", vec![string_lit(&message)]), DataType::Boolean)
}

/// `CASE WHEN <check> THEN TRUE ELSE <raise> END`
fn checked(check: Expr, table: &TableName) -> Expr {
    case(vec![(check, bool_lit(true))], Some(raise(table)))
}

/// The WHERE of an UPDATE/DELETE: the filter, and the user's condition and the check evaluated only
/// on rows that pass the filter.
fn guarded(filter: Option<Expr>, user: Option<Expr>, then: Option<Expr>) -> Option<Expr> {
    let body = match (user, then) {
        (Some(u), Some(t)) => Some(case(vec![(u, t)], Some(bool_lit(false)))),
        (Some(u), None) => Some(u),
        (None, t) => t,
    };
    match (filter, body) {
        (Some(f), Some(b)) => {
            // The outer copy of the filter leaves the planner an indexable condition.
            and_all(vec![f.clone(), case(vec![(f, b)], Some(bool_lit(false)))])
        }
        (f, None) => f,
        (None, b) => b,
    }
}

/// A write's filter for `op`, refusing a table no permit covers.
fn write_filter(w: &mut Walker<'_>, table: &TableName, op: Operation) -> Result<TableFilter, RewriteError> {
    w.filter(table, op)
        .filter(|f| !f.permissive.is_empty())
        .ok_or_else(|| RewriteError::TableDenied(table.name.clone()))
}

fn table_def(w: &Walker<'_>, table: &TableName) -> Result<TableDef, RewriteError> {
    w.rw.catalog.table(table).cloned().ok_or_else(|| RewriteError::UndefinedTable(table.to_string()))
}

/// A column may be written when the write's filter lists it and shows it clear on every row.
fn check_writable(filter: &TableFilter, def: &TableDef, column: &str) -> Result<(), RewriteError> {
    if def.column(column).is_none() {
        return Err(RewriteError::UndefinedColumn { table: def.name.name.clone(), column: column.to_string() });
    }
    let writable = filter.columns.iter().any(|c| c.name == column && c.clear == Condition::Always);
    if writable {
        Ok(())
    } else {
        Err(RewriteError::ColumnDenied { table: def.name.name.clone(), column: column.to_string() })
    }
}

fn applied(table: &TableName, op: Operation, alias: &str, filter: &Option<Expr>) -> AppliedFilter {
    AppliedFilter {
        table: table.clone(),
        operation: op,
        alias: alias.to_string(),
        row_filter: filter.as_ref().map(|e| e.to_string()),
        columns: vec![],
    }
}

/// Registers the write's target so names in WHERE/SET resolve to it. Only columns the SELECT filter
/// shows clear on every row may be read: comparing a masked column in a WHERE would reveal its value.
fn push_target(
    w: &mut Walker<'_>,
    table: &TableName,
    def: &TableDef,
    refname: &str,
    unaliased: bool,
    select: Option<&TableFilter>,
) {
    let readable = select
        .map(|f| f.columns.iter().filter(|c| c.clear == Condition::Always).map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    if let Some(level) = w.levels.last_mut() {
        level.rels.push(Rel {
            refname: refname.to_string(),
            kind: RelKind::Governed {
                table: table.clone(),
                readable,
                all: def.columns.iter().map(|c| c.name.clone()).collect(),
                unaliased,
            },
        });
    }
}

/// The filter rows of a write must pass: the operation's and, when the principal may read the table,
/// the SELECT filter (PostgreSQL applies SELECT policies to rows an UPDATE/DELETE reads).
fn using_filter(
    op_filter: &TableFilter,
    select: Option<&TableFilter>,
    def: &TableDef,
    refname: &str,
) -> Result<Option<Expr>, RewriteError> {
    let target = |c: &str| qcolumn(refname, c);
    let mut parts: Vec<Expr> = row_filter(op_filter, def, &target)?.into_iter().collect();
    if let Some(sel) = select.filter(|s| !s.permissive.is_empty()) {
        // The same condition twice (a policy granting SELECT and DELETE alike) is written once.
        if let Some(e) = row_filter(sel, def, &target)?
            && !parts.contains(&e)
        {
            parts.push(e);
        }
    }
    Ok(and_all(parts))
}

pub(crate) fn insert(w: &mut Walker<'_>, ins: &mut Insert) -> Result<(), RewriteError> {
    if ins.or.is_some()
        || ins.ignore
        || ins.table_alias.is_some()
        || ins.overwrite
        || !ins.assignments.is_empty()
        || ins.partitioned.is_some()
        || !ins.after_columns.is_empty()
        || ins.has_table_keyword
        || ins.output.is_some()
        || ins.replace_into
        || ins.priority.is_some()
        || ins.insert_alias.is_some()
        || ins.settings.is_some()
        || ins.format_clause.is_some()
        || ins.multi_table_insert_type.is_some()
        || !ins.multi_table_into_clauses.is_empty()
        || !ins.multi_table_when_clauses.is_empty()
        || ins.multi_table_else_clause.is_some()
    {
        return Err(unsupported("INSERT clause outside PostgreSQL's"));
    }
    if ins.on.is_some() {
        return Err(unsupported("INSERT ... ON CONFLICT"));
    }
    if ins.returning.is_some() {
        return Err(unsupported("RETURNING"));
    }
    let TableObject::TableName(name) = &ins.table else {
        return Err(unsupported("INSERT INTO a table function"));
    };
    let table = w.resolve_table(name)?;
    let def = table_def(w, &table)?;
    let filter = write_filter(w, &table, Operation::Insert)?;
    let source = ins.source.as_mut().ok_or_else(|| unsupported("INSERT without a source"))?;
    let columns: Vec<String> = if ins.columns.is_empty() {
        // Without a list PostgreSQL fills the leading columns in table order.
        let n = match source.body.as_ref() {
            SetExpr::Values(v) => v.rows.iter().map(|r| r.content.len()).max().unwrap_or(0),
            _ => def.columns.len(),
        };
        def.columns.iter().take(n).map(|c| c.name.clone()).collect()
    } else {
        ins.columns
            .iter()
            .map(|n| match fold_name(n).as_deref() {
                Some([c]) => Ok(c.clone()),
                _ => Err(unsupported("qualified INSERT column")),
            })
            .collect::<Result<_, _>>()?
    };
    let mut types = BTreeMap::new();
    for c in &columns {
        check_writable(&filter, &def, c)?;
        if let Some(col) = def.column(c) {
            types.insert(c.clone(), parse_type(&col.data_type, &table)?);
        }
    }
    ins.table = TableObject::TableName(qname(&[&table.schema, &table.name]));
    ins.columns = columns.iter().map(|c| ObjectName::from(vec![qident(c)])).collect();
    w.query(source)?;

    let missing = RefCell::new(Vec::new());
    let new_value = |c: &str| match types.get(c) {
        Some(ty) => cast(qcolumn(NEW_ROWS, c), ty.clone()),
        None => {
            missing.borrow_mut().push(c.to_string());
            null_lit()
        }
    };
    let check = row_filter(&filter, &def, &new_value)?;
    if let Some(c) = missing.borrow().first() {
        return Err(RewriteError::NotAllowed(format!(
            "INSERT into {} must set column {c}: its row-level security policy checks it",
            table.name
        )));
    }
    w.applied.push(applied(&table, Operation::Insert, &table.name, &check));
    w.tables.insert(table.clone());
    let Some(check) = check else {
        return Ok(());
    };
    // SELECT CAST(n.c AS type) AS c, ... FROM (<source>) AS n(c, ...) WHERE <checked>
    static WRAPPER: OnceLock<Result<Query, String>> = OnceLock::new();
    let mut wrapper = template_query(&WRAPPER, "SELECT 1 FROM (SELECT 1) AS n")?;
    let SetExpr::Select(select) = wrapper.body.as_mut() else {
        return Err(RewriteError::Internal("insert template is not a SELECT".into()));
    };
    select.projection =
        columns.iter().map(|c| SelectItem::ExprWithAlias { expr: new_value(c), alias: qident(c) }).collect();
    let Some(TableFactor::Derived { subquery, alias, .. }) = select.from.first_mut().map(|t| &mut t.relation) else {
        return Err(RewriteError::Internal("insert template has no derived table".into()));
    };
    if let Some(src) = ins.source.take() {
        *subquery = src;
    }
    *alias = Some(TableAlias {
        explicit: true,
        name: qident(NEW_ROWS),
        columns: columns.iter().map(|c| TableAliasColumnDef { name: qident(c), data_type: None }).collect(),
        at: None,
    });
    select.selection = Some(checked(check, &table));
    ins.source = Some(Box::new(wrapper));
    Ok(())
}

/// Resolves an UPDATE/DELETE target, which must be a plain governed table.
fn target(w: &mut Walker<'_>, factor: &mut TableFactor) -> Result<(TableName, TableDef, String, bool), RewriteError> {
    let TableFactor::Table {
        name,
        alias,
        args: None,
        with_hints,
        version: None,
        with_ordinality: false,
        partitions,
        json_path: None,
        sample: None,
        index_hints,
    } = factor
    else {
        return Err(unsupported("write target that is not a plain table"));
    };
    if !with_hints.is_empty() || !partitions.is_empty() || !index_hints.is_empty() {
        return Err(unsupported("write target modifiers"));
    }
    let table = w.resolve_table(name)?;
    let def = table_def(w, &table)?;
    *name = qname(&[&table.schema, &table.name]);
    let unaliased = alias.is_none();
    let refname = match alias {
        Some(a) => {
            if !a.columns.is_empty() || a.at.is_some() {
                return Err(unsupported("column aliases on a write target"));
            }
            let n = fold(&a.name);
            a.name = qident(&n);
            n
        }
        None => table.name.clone(),
    };
    Ok((table, def, refname, unaliased))
}

fn plain_target_list(list: &mut [TableWithJoins]) -> Result<&mut TableFactor, RewriteError> {
    match list {
        [twj] if twj.joins.is_empty() => Ok(&mut twj.relation),
        _ => Err(unsupported("a write with more than one target table")),
    }
}

pub(crate) fn update(w: &mut Walker<'_>, upd: &mut Update) -> Result<(), RewriteError> {
    if upd.returning.is_some() {
        return Err(unsupported("RETURNING"));
    }
    if upd.output.is_some()
        || upd.or.is_some()
        || !upd.order_by.is_empty()
        || upd.limit.is_some()
        || !upd.optimizer_hints.is_empty()
    {
        return Err(unsupported("UPDATE clause outside PostgreSQL's"));
    }
    let (table, def, refname, unaliased) = target(w, plain_target_list(std::slice::from_mut(&mut upd.table))?)?;
    let filter = write_filter(w, &table, Operation::Update)?;
    let check_filter = write_filter(w, &table, Operation::UpdateCheck)?;
    let select = w.filter(&table, Operation::Select);
    push_target(w, &table, &def, &refname, unaliased, select.as_ref());
    match &mut upd.from {
        None => {}
        Some(UpdateTableFromKind::AfterSet(list)) => {
            for twj in list {
                w.table_with_joins(twj)?;
            }
        }
        Some(UpdateTableFromKind::BeforeSet(_)) => {
            return Err(unsupported("UPDATE FROM before SET"));
        }
    }
    let mut new_values: BTreeMap<String, Expr> = BTreeMap::new();
    for assignment in &mut upd.assignments {
        let AssignmentTarget::ColumnName(name) = &mut assignment.target else {
            return Err(unsupported("UPDATE of a column tuple"));
        };
        let column = match fold_name(name).as_deref() {
            Some([c]) => c.clone(),
            _ => return Err(unsupported("qualified or nested UPDATE target")),
        };
        check_writable(&filter, &def, &column)?;
        *name = ObjectName::from(vec![qident(&column)]);
        w.expr(&mut assignment.value)?;
        new_values.insert(column, Expr::Nested(Box::new(assignment.value.clone())));
    }
    if let Some(e) = &mut upd.selection {
        w.expr(e)?;
    }
    let using = using_filter(&filter, select.as_ref(), &def, &refname)?;
    let new_row = |c: &str| new_values.get(c).cloned().unwrap_or_else(|| qcolumn(&refname, c));
    let check = row_filter(&check_filter, &def, &new_row)?;
    w.applied.push(applied(&table, Operation::Update, &refname, &using));
    w.applied.push(applied(&table, Operation::UpdateCheck, &refname, &check));
    w.tables.insert(table.clone());
    upd.selection = guarded(using, upd.selection.take(), check.map(|c| checked(c, &table)));
    Ok(())
}

pub(crate) fn delete(w: &mut Walker<'_>, del: &mut Delete) -> Result<(), RewriteError> {
    if del.returning.is_some() {
        return Err(unsupported("RETURNING"));
    }
    if !del.tables.is_empty()
        || del.output.is_some()
        || !del.order_by.is_empty()
        || del.limit.is_some()
        || !del.optimizer_hints.is_empty()
    {
        return Err(unsupported("DELETE clause outside PostgreSQL's"));
    }
    let list = match &mut del.from {
        FromTable::WithFromKeyword(list) | FromTable::WithoutKeyword(list) => list,
    };
    let (table, def, refname, unaliased) = target(w, plain_target_list(list)?)?;
    let filter = write_filter(w, &table, Operation::Delete)?;
    let select = w.filter(&table, Operation::Select);
    push_target(w, &table, &def, &refname, unaliased, select.as_ref());
    if let Some(list) = &mut del.using {
        for twj in list {
            w.table_with_joins(twj)?;
        }
    }
    if let Some(e) = &mut del.selection {
        w.expr(e)?;
    }
    let using = using_filter(&filter, select.as_ref(), &def, &refname)?;
    w.applied.push(applied(&table, Operation::Delete, &refname, &using));
    w.tables.insert(table.clone());
    del.selection = guarded(using, del.selection.take(), None);
    Ok(())
}
