use super::*;

/// The view expression of `column` in `sales.orders` under a single column access.
fn shown_as(access: ColumnAccess) -> String {
    let lookup = move |t: &TableName, _: Operation| {
        Some(TableFilter {
            table: t.clone(),
            permissive: vec![None],
            restrictive: vec![],
            columns: vec![access.clone()],
            principal: alice(),
            policies: vec![],
        })
    };
    let r = run_with("SELECT * FROM sales.orders", &lookup).unwrap();
    r.statements[0].applied[0].columns[0].1.clone()
}

fn access(name: &str, clear: Condition, masked: Option<(Mask, Condition)>) -> ColumnAccess {
    ColumnAccess { name: name.into(), clear, masked }
}

#[test]
fn clear_column_is_the_bare_column() {
    assert_eq!(shown_as(ColumnAccess::clear("customer")), "\"orders\".\"customer\"");
}

#[test]
fn last4_mask_shows_stars_and_last_four() {
    assert_eq!(
        shown_as(access("card", Condition::Never, Some((Mask::Last4, Condition::Always)))),
        "'************' || right(CAST(\"orders\".\"card\" AS TEXT), 4)"
    );
}

#[test]
fn redact_mask_is_a_text_constant() {
    assert_eq!(
        shown_as(access("customer", Condition::Never, Some((Mask::Redact, Condition::Always)))),
        "CAST('****' AS TEXT)"
    );
}

#[test]
fn hash_mask_is_md5_of_text() {
    assert_eq!(
        shown_as(access("customer", Condition::Never, Some((Mask::Hash, Condition::Always)))),
        "md5(CAST(\"orders\".\"customer\" AS TEXT))"
    );
}

#[test]
fn null_mask_is_typed_null() {
    assert_eq!(
        shown_as(access("amount", Condition::Never, Some((Mask::Null, Condition::Always)))),
        "CAST(NULL AS NUMERIC(10,2))"
    );
}

#[test]
fn expression_mask_refers_to_the_raw_column() {
    assert_eq!(
        shown_as(access(
            "customer",
            Condition::Never,
            Some((Mask::Expr("left(customer, 1) || '***'".into()), Condition::Always))
        )),
        "left(\"orders\".\"customer\", 1) || '***'"
    );
}

#[test]
fn expression_mask_naming_another_column_is_a_policy_error() {
    let lookup = |t: &TableName, _: Operation| {
        Some(TableFilter {
            table: t.clone(),
            permissive: vec![None],
            restrictive: vec![],
            columns: vec![access("customer", Condition::Never, Some((Mask::Expr("note".into()), Condition::Always)))],
            principal: alice(),
            policies: vec![],
        })
    };
    assert_state(&run_with("SELECT * FROM sales.orders", &lookup).unwrap_err(), "XX000");
}

#[test]
fn cell_condition_with_mask_builds_case() {
    assert_eq!(
        shown_as(access(
            "customer",
            Condition::AnyOf(vec!["region = principal.region".into()]),
            Some((Mask::Redact, Condition::Always))
        )),
        "CASE WHEN (\"orders\".\"region\" = 'EU') THEN \"orders\".\"customer\" ELSE CAST('****' AS TEXT) END"
    );
}

#[test]
fn cell_conditions_on_clear_and_mask_build_case_with_null_else() {
    assert_eq!(
        shown_as(access(
            "customer",
            Condition::AnyOf(vec!["region = 'EU'".into()]),
            Some((Mask::Hash, Condition::AnyOf(vec!["region = 'US'".into()])))
        )),
        "CASE WHEN (\"orders\".\"region\" = 'EU') THEN \"orders\".\"customer\" \
         WHEN (\"orders\".\"region\" = 'US') THEN md5(CAST(\"orders\".\"customer\" AS TEXT)) ELSE NULL END"
    );
}

#[test]
fn text_mask_over_non_text_column_shows_clear_value_as_text() {
    assert_eq!(
        shown_as(access(
            "amount",
            Condition::AnyOf(vec!["region = 'EU'".into()]),
            Some((Mask::Redact, Condition::Always))
        )),
        "CASE WHEN (\"orders\".\"region\" = 'EU') THEN CAST(\"orders\".\"amount\" AS TEXT) ELSE CAST('****' AS TEXT) END"
    );
}

#[test]
fn cell_condition_without_mask_is_null_elsewhere() {
    assert_eq!(
        shown_as(access("customer", Condition::AnyOf(vec!["id > 10".into()]), None)),
        "CASE WHEN (\"orders\".\"id\" > 10) THEN \"orders\".\"customer\" ELSE NULL END"
    );
}

#[test]
fn never_clear_and_never_masked_is_typed_null() {
    assert_eq!(
        shown_as(access("id", Condition::Never, Some((Mask::Redact, Condition::Never)))),
        "CAST(NULL AS INTEGER)"
    );
}

#[test]
fn employee_salary_is_clear_only_in_own_department() {
    let out = ok("SELECT salary FROM hr.employees");
    assert!(
        out.contains("CASE WHEN (\"employees\".\"dept\" = 'eng') THEN \"employees\".\"salary\" ELSE CAST(NULL AS INTEGER) END AS \"salary\""),
        "{out}"
    );
}
