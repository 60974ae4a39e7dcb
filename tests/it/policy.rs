//! Policy semantics on the shipped demo world and on small purpose-built sets: prefixes, groups, tags,
//! forbid over permit, compiled table filters, validation errors and hot reload.

use std::path::Path;
use std::time::Duration;

use lakegate_core::identity::Principal;
use lakegate_core::policy::{
    Condition, Mask, PolicyEngine, PolicyStore, RequestContext, Resource, TableName, TableOp, watch,
};

fn demo() -> PolicyEngine {
    PolicyEngine::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")).expect("shipped policies load")
}

fn user(sub: &str, groups: &[&str], attrs: &[(&str, &str)]) -> Principal {
    Principal {
        issuer: "test".into(),
        subject: sub.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        attributes: attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        token_id: None,
        expires_at: i64::MAX,
        actors: Vec::new(),
    }
}

fn alice() -> Principal {
    user("alice", &["analysts"], &[("region", "EU")])
}
fn carol() -> Principal {
    user("carol", &["hr"], &[])
}
fn dave() -> Principal {
    user("dave", &[], &[])
}

fn allowed(engine: &PolicyEngine, p: &Principal, action: &str, resource: &str) -> bool {
    let r = Resource::parse(resource).expect("resource");
    engine.decide(p, action, &r, &RequestContext { front: "test", ..Default::default() }).expect("decides").allowed
}

/// A temporary policy directory holding the shipped schema and catalog plus `policies`.
fn policy_dir(policies: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("dir");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    for f in ["lakegate.cedarschema", "catalog.toml"] {
        std::fs::copy(shipped.join(f), dir.path().join(f)).expect("copy");
    }
    std::fs::write(dir.path().join("test.cedar"), policies).expect("write");
    dir
}

#[test]
fn a_prefix_grant_covers_every_object_below_it() {
    let e = demo();
    assert!(allowed(&e, &alice(), "s3:GetObject", "s3://lake/sales/2024/q1/deep/file.parquet"));
    assert!(allowed(&e, &alice(), "s3:PutObject", "s3://lake/sales/x.txt"));
    assert!(allowed(&e, &alice(), "s3:ListBucket", "s3://lake/sales/2024/"));
    let partial = Resource::prefix("lake", "sales/20").expect("prefix");
    let d = e.decide(&alice(), "s3:ListBucket", &partial, &RequestContext::default()).expect("decides");
    assert!(d.allowed, "a partial listing prefix sits under sales/");
}

#[test]
fn a_prefix_grant_does_not_reach_siblings_or_look_alikes() {
    let e = demo();
    assert!(!allowed(&e, &alice(), "s3:GetObject", "s3://lake/hr/salaries.csv"));
    assert!(!allowed(&e, &alice(), "s3:GetObject", "s3://lake/salesforce/x"));
    assert!(!allowed(&e, &alice(), "s3:ListBucket", "s3://lake/"), "the bucket root is not granted");
    assert!(!allowed(&e, &alice(), "s3:GetObject", "s3://other/sales/x"));
}

#[test]
fn groups_decide_who_reaches_which_prefix() {
    let e = demo();
    assert!(allowed(&e, &carol(), "s3:PutObject", "s3://lake/hr/x.csv"));
    assert!(!allowed(&e, &carol(), "s3:GetObject", "s3://lake/sales/x.csv"));
    assert!(allowed(&e, &dave(), "s3:GetObject", "s3://lake/public/readme.txt"), "any signed-in user reads public/");
    assert!(!allowed(&e, &dave(), "s3:PutObject", "s3://lake/public/readme.txt"), "but does not write it");
}

#[test]
fn column_tags_hide_restricted_columns_from_analysts() {
    let e = demo();
    assert!(allowed(&e, &alice(), "SelectTable", r#"Column::"hr.employees.name""#));
    assert!(!allowed(&e, &alice(), "SelectTable", r#"Column::"hr.employees.ssn""#));
    assert!(!allowed(&e, &alice(), "SelectTable", r#"Column::"hr.employees.salary""#));
    assert!(allowed(&e, &carol(), "SelectTable", r#"Column::"hr.employees.ssn""#));
}

#[test]
fn forbid_overrides_permit() {
    let dir = policy_dir(
        r#"
        @id("analysts-sales") permit(principal in Group::"analysts", action in Action::"Read", resource in Prefix::"lake/sales/");
        @id("no-secrets") forbid(principal, action, resource in Prefix::"lake/sales/secret/");
        "#,
    );
    let e = PolicyEngine::load(dir.path()).expect("loads");
    assert!(allowed(&e, &alice(), "s3:GetObject", "s3://lake/sales/x"));
    let r = Resource::parse("s3://lake/sales/secret/plan.txt").expect("resource");
    let d = e.decide(&alice(), "s3:GetObject", &r, &RequestContext::default()).expect("decides");
    assert!(!d.allowed);
    assert_eq!(d.policy_ids(), vec!["no-secrets"], "the forbid is named as the deciding policy");
}

#[test]
fn objects_a_policy_names_are_decided_on_their_own_even_after_their_siblings() {
    let dir = policy_dir(
        r#"
        @id("analysts-sales") permit(principal in Group::"analysts", action in Action::"Read", resource in Prefix::"lake/sales/");
        @id("not-the-plan") forbid(principal, action, resource == Object::"lake/sales/plan.txt");
        @id("not-the-budget") forbid(principal, action, resource) when { resource == Object::"lake/sales/budget.xlsx" };
        @id("not-the-keys") forbid(principal, action, resource) when { resource in [Object::"lake/sales/a.key", Object::"lake/sales/b.key"] };
        @id("not-the-marker") forbid(principal, action, resource == Object::"lake/sales/old/");
        "#,
    );
    let e = PolicyEngine::load(dir.path()).expect("loads");
    let get = |key: &str| {
        // An object, even where the key ends in `/` (a folder marker), which `Resource::parse` takes as a prefix.
        let object = Resource::object("lake", key).expect("resource");
        e.decide(&alice(), "s3:GetObject", &object, &RequestContext::default()).expect("decides").allowed
    };
    // Siblings first: a decision shared by the objects of a prefix would be waiting when the named ones come.
    assert!(get("sales/q1.csv"));
    assert!(get("sales/old/q0.csv"));
    for named in ["plan.txt", "budget.xlsx", "a.key", "b.key", "old/"] {
        assert!(!get(&format!("sales/{named}")), "{named}");
    }
    assert!(get("sales/q2.csv"), "and the siblings still read");
}

#[test]
fn a_decision_shared_by_users_and_resources_no_policy_names_is_the_one_each_gets_alone() {
    let nested = policy_dir(
        r#"
        @id("sales") permit(principal in Group::"analysts", action in [Action::"Read", Action::"List"], resource in Prefix::"lake/sales/");
        @id("drafts") forbid(principal, action, resource in Prefix::"lake/sales/2024/drafts/");
        @id("plan") forbid(principal, action == Action::"s3:GetObject", resource == Object::"lake/sales/plan.txt");
        @id("write") permit(principal, action in Action::"Write", resource in Prefix::"lake/sales/2024/") when { principal.hasTag("region") };
        @id("bucket") permit(principal, action == Action::"s3:ListBucket", resource in Bucket::"lake") unless { resource in Prefix::"lake/hr/" };
        @id("not-mallory") forbid(principal == User::"mallory", action, resource in Prefix::"lake/sales/2024/");
        "#,
    );
    // Erin and mallory bring what alice brings (groups, attributes, issuer) under another name; only mallory's
    // is named by a policy.
    let erin = user("erin", &["analysts"], &[("region", "EU")]);
    let mallory = user("mallory", &["analysts"], &[("region", "EU")]);
    let sets: [(&str, &dyn Fn() -> PolicyEngine); 2] =
        [("demo", &demo), ("nested", &|| PolicyEngine::load(nested.path()).expect("loads"))];
    let mut keys = vec![
        "sales/2024/q1.parquet",
        "sales/2024/11/30/part-7.parquet",
        "sales/2024/drafts/x.csv",
        "sales/2024/drafts/deep/y.csv",
        "sales/2024/drafts/",
        "sales/2024/drafts",
        "sales/plan.txt",
        "sales/2025/plan.txt",
        "sales/x.csv",
        "salesman/x",
        "hr/salaries.csv",
        "hr/2024/review.pdf",
        "hr/",
        "public/readme.txt",
        "top-level.txt",
    ];
    for (name, fresh) in sets {
        let shared = fresh();
        // The second pass meets the decisions of the first in the other order.
        for _pass in 0..2 {
            for principal in [alice(), erin.clone(), mallory.clone(), carol(), dave()] {
                for key in &keys {
                    for (action, resource) in [
                        ("s3:GetObject", Resource::object("lake", key)),
                        ("s3:PutObject", Resource::object("lake", key)),
                        ("s3:ListBucket", Resource::prefix("lake", key)),
                    ] {
                        let resource = resource.expect("resource");
                        let context = RequestContext { front: "test", ..Default::default() };
                        let decided = shared.decide(&principal, action, &resource, &context).expect("decides");
                        // A store of its own has decided nothing before: Cedar's answer for this resource alone.
                        let alone = fresh().decide(&principal, action, &resource, &context).expect("decides");
                        assert_eq!(decided, alone, "{name}: {} {action} {resource}", principal.subject);
                    }
                }
            }
            keys.reverse();
        }
    }
}

/// A policy directory whose schema is the shipped one edited by `edit`, with `entities.json` and `policies`.
fn policy_dir_with_schema(edit: impl Fn(&str) -> String, entities: &str, policies: &str) -> tempfile::TempDir {
    let dir = policy_dir(policies);
    let schema = dir.path().join("lakegate.cedarschema");
    let text = std::fs::read_to_string(&schema).expect("schema");
    let edited = edit(&text);
    assert_ne!(edited, text, "the edit changed nothing");
    std::fs::write(&schema, edited).expect("schema");
    std::fs::write(dir.path().join("entities.json"), entities).expect("entities");
    dir
}

#[test]
fn groups_nested_in_entities_json_pass_their_grants_and_forbids_to_every_member_below() {
    let dir = policy_dir_with_schema(
        |schema| schema.replace("entity Group;", "entity Group in [Group];"),
        r#"[
            {"uid": {"type": "Group", "id": "analysts"}, "attrs": {}, "parents": [{"type": "Group", "id": "staff"}]},
            {"uid": {"type": "Group", "id": "contractors"}, "attrs": {}, "parents": [{"type": "Group", "id": "everyone"}]},
            {"uid": {"type": "Group", "id": "staff"}, "attrs": {}, "parents": [{"type": "Group", "id": "everyone"}]},
            {"uid": {"type": "Group", "id": "everyone"}, "attrs": {}, "parents": []}
        ]"#,
        r#"
        @id("everyone-reads-public") permit(principal in Group::"everyone", action in Action::"Read", resource in Prefix::"lake/public/");
        @id("no-internal-for-contractors") forbid(principal in Group::"contractors", action, resource in Prefix::"lake/public/internal/");
        @id("staff-reads-sales") permit(principal in Group::"staff", action in Action::"Read", resource in Prefix::"lake/sales/");
        "#,
    );
    let e = PolicyEngine::load(dir.path()).expect("loads");
    let alice = user("alice", &["analysts"], &[]);
    let bob = user("bob", &["contractors"], &[]);
    // Asked twice each, in both orders of users: the second answer may come from the decision cache.
    for _ in 0..2 {
        for (who, object, expected) in [
            (&alice, "s3://lake/public/internal/2024/plan.md", true),
            (&bob, "s3://lake/public/internal/2024/plan.md", false),
            (&bob, "s3://lake/public/2024/readme.md", true),
            (&alice, "s3://lake/sales/2024/q1.parquet", true),
            (&bob, "s3://lake/sales/2024/q1.parquet", false),
            (&dave(), "s3://lake/public/2024/readme.md", false),
        ] {
            assert_eq!(allowed(&e, who, "s3:GetObject", object), expected, "{} reading {object}", who.subject);
        }
    }
}

#[test]
fn a_schema_that_enumerates_ids_refuses_an_id_it_does_not_list_after_one_it_does() {
    let dir = policy_dir_with_schema(
        |schema| schema.replace("entity Role;", r#"entity Role enum ["reader", "writer"];"#),
        "[]",
        r#"@id("any-role") permit(principal, action == Action::"sts:AssumeRoleWithWebIdentity", resource is Role);"#,
    );
    let e = PolicyEngine::load(dir.path()).expect("loads");
    let ctx = RequestContext { front: "test", ..Default::default() };
    let role = |id: &str| Resource::parse(&format!("Role::{id:?}")).expect("role");
    let reader = e.decide(&alice(), "sts:AssumeRoleWithWebIdentity", &role("reader"), &ctx).expect("decides");
    assert!(reader.allowed);
    // Same action, resource type and context as the request before: only the id tells it is not in the schema.
    let refused = e.decide(&alice(), "sts:AssumeRoleWithWebIdentity", &role("admin"), &ctx);
    assert!(refused.is_err(), "{refused:?}");
}

#[test]
fn a_forbid_that_fails_to_evaluate_denies() {
    // The overflow is an evaluation error: Cedar would skip the forbid and let the permit allow; Lakegate denies.
    let dir = policy_dir(
        r#"
        @id("all-public") permit(principal, action in Action::"Read", resource in Prefix::"lake/public/");
        @id("overflow") forbid(principal, action, resource in Prefix::"lake/public/secret/") when { 9223372036854775807 + 1 > 0 };
        "#,
    );
    let e = PolicyEngine::load(dir.path()).expect("loads");
    assert!(allowed(&e, &dave(), "s3:GetObject", "s3://lake/public/a"));
    let r = Resource::parse("s3://lake/public/secret/x").expect("resource");
    let d = e.decide(&dave(), "s3:GetObject", &r, &RequestContext::default()).expect("decides");
    assert!(!d.allowed);
    assert_eq!(d.policy_ids(), vec!["overflow"]);
    assert!(!d.errors.is_empty());
}

#[test]
fn the_deciding_policies_are_named_by_their_id() {
    let e = demo();
    let r = Resource::parse("s3://lake/sales/2024/q1.parquet").expect("resource");
    let d = e.decide(&alice(), "s3:GetObject", &r, &RequestContext::default()).expect("decides");
    assert_eq!(d.policy_ids(), vec!["lake-sales-analysts"]);
}

#[test]
fn policies_without_an_id_are_named_by_file_and_line() {
    let dir = policy_dir("\n\npermit(principal, action in Action::\"Read\", resource in Prefix::\"lake/public/\");\n");
    let e = PolicyEngine::load(dir.path()).expect("loads");
    let r = Resource::parse("s3://lake/public/a").expect("resource");
    let d = e.decide(&dave(), "s3:GetObject", &r, &RequestContext::default()).expect("decides");
    assert_eq!(d.policy_ids(), vec!["test.cedar:3"]);
}

#[test]
fn an_unknown_action_is_an_error_not_a_deny() {
    let e = demo();
    let r = Resource::parse("s3://lake/public/a").expect("resource");
    assert!(e.decide(&alice(), "s3:DeleteBucket", &r, &RequestContext::default()).is_err());
}

#[test]
fn analysts_see_their_region_with_card_numbers_masked() {
    let f = demo()
        .table_filter(
            &alice(),
            TableOp::Select,
            &TableName { schema: "sales".into(), name: "orders".into() },
            &RequestContext::default(),
        )
        .expect("filter");
    assert_eq!(f.permissive, vec![Some("region = principal.region".to_owned())]);
    assert!(f.restrictive.is_empty());
    let names: Vec<&str> = f.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["order_id", "customer", "region", "amount", "card_number"]);
    let card = f.columns.iter().find(|c| c.name == "card_number").expect("card column");
    assert_eq!(card.clear, Condition::Never);
    assert_eq!(card.masked, Some((Mask::Last4, Condition::Always)));
    assert!(f.columns.iter().filter(|c| c.name != "card_number").all(|c| c.clear == Condition::Always));
    assert_eq!(f.principal.get("region").map(String::as_str), Some("EU"));
}

#[test]
fn analysts_see_the_staff_directory_without_salary_or_ssn() {
    let f = demo()
        .table_filter(
            &alice(),
            TableOp::Select,
            &TableName { schema: "hr".into(), name: "employees".into() },
            &RequestContext::default(),
        )
        .expect("filter");
    assert_eq!(f.permissive, vec![None], "all rows");
    let names: Vec<&str> = f.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["id", "name", "department"]);
}

#[test]
fn a_user_without_grants_sees_no_table() {
    let f = demo()
        .table_filter(
            &dave(),
            TableOp::Select,
            &TableName { schema: "sales".into(), name: "orders".into() },
            &RequestContext::default(),
        )
        .expect("filter");
    assert!(f.permissive.is_empty());
    assert!(f.columns.is_empty());
}

#[test]
fn cell_filters_and_restrictive_filters_compile() {
    let dir = policy_dir(
        r#"
        @id("rows") @row_filter("region = principal.region")
        permit(principal in Group::"analysts", action == Action::"SelectTable", resource in Table::"sales.orders");
        @id("big-orders-clear-card") @row_filter("amount > 1000")
        permit(principal in Group::"analysts", action == Action::"SelectTable", resource == Column::"sales.orders.card_number");
        @id("small-only") @row_filter("amount < 5000")
        permit(principal in Group::"analysts", action == Action::"RestrictRows", resource == Table::"sales.orders");
        "#,
    );
    let e = PolicyEngine::load(dir.path()).expect("loads");
    let f = e
        .table_filter(
            &alice(),
            TableOp::Select,
            &TableName { schema: "sales".into(), name: "orders".into() },
            &RequestContext::default(),
        )
        .expect("filter");
    assert_eq!(f.restrictive, vec!["amount < 5000".to_owned()]);
    let card = f.columns.iter().find(|c| c.name == "card_number").expect("card");
    // The table permit ("rows") also covers the column, and its filter equals the row filter: so card_number
    // is clear on every visible row. The cell permit adds nothing visible here.
    assert_eq!(card.clear, Condition::Always);
    let writes = e
        .table_filter(
            &alice(),
            TableOp::Update,
            &TableName { schema: "sales".into(), name: "orders".into() },
            &RequestContext::default(),
        )
        .expect("filter");
    assert!(writes.permissive.is_empty(), "writes need their own action");
}

#[test]
fn a_broken_policy_is_reported_with_file_line_and_column() {
    let dir = policy_dir(
        "@id(\"ok\")\npermit(principal, action, resource);\n\npermit(principal, action == Action::\"NoSuch\", resource);\n",
    );
    let errors = PolicyStore::load(dir.path()).expect_err("invalid");
    let text = errors.to_string();
    assert!(text.contains("test.cedar:4:"), "{text}");
    assert!(text.contains("NoSuch"), "{text}");
    let dir = policy_dir("permit(principal, action, resource) when { principal.x == };");
    let text = PolicyStore::load(dir.path()).expect_err("unparsable").to_string();
    assert!(text.contains("test.cedar:1:"), "{text}");
    // A policy that does not validate, in the second of two files, is placed in its own file.
    let dir = policy_dir("@id(\"first\") permit(principal, action, resource);\n");
    let second = "// second\n\n@id(\"second\")\npermit(principal, action == Action::\"Nope\", resource);\n";
    std::fs::write(dir.path().join("second.cedar"), second).expect("write");
    let text = PolicyStore::load(dir.path()).expect_err("invalid").to_string();
    assert!(text.contains("second.cedar:4:") && text.contains("Nope"), "{text}");
}

#[test]
fn lakegate_annotations_are_validated() {
    let dir = policy_dir("@mask(\"scramble\") permit(principal, action == Action::\"SelectTable\", resource);");
    assert!(PolicyStore::load(dir.path()).expect_err("bad mask").to_string().contains("scramble"));
    let dir = policy_dir("permit(principal, action == Action::\"RestrictRows\", resource);");
    assert!(PolicyStore::load(dir.path()).expect_err("no filter").to_string().contains("row_filter"));
}

#[tokio::test]
async fn a_reload_keeps_the_last_good_set_when_a_file_breaks() {
    let dir =
        policy_dir(r#"@id("pub") permit(principal, action in Action::"Read", resource in Prefix::"lake/public/");"#);
    let engine = PolicyEngine::load(dir.path()).expect("loads");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = watch(engine.clone(), dir.path().to_owned(), Duration::from_millis(100), move |o| {
        let _ = tx.send(format!("{o:?}"));
    });
    std::fs::write(dir.path().join("test.cedar"), "permit(principal, action, resource) when {").expect("break");
    let outcome = rx.recv().await.expect("reload attempted");
    assert!(outcome.starts_with("Rejected"), "{outcome}");
    assert!(allowed(&engine, &dave(), "s3:GetObject", "s3://lake/public/a"), "last good set still in force");

    std::fs::write(dir.path().join("test.cedar"), r#"@id("none") forbid(principal, action, resource);"#).expect("fix");
    let outcome = rx.recv().await.expect("reload attempted");
    assert!(outcome.starts_with("Reloaded"), "{outcome}");
    assert!(!allowed(&engine, &dave(), "s3:GetObject", "s3://lake/public/a"), "new set in force");
    task.abort();
}
