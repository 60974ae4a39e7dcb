use super::*;

fn grant(bucket: &str, prefix: &str, permission: Permission) -> ScopeGrant {
    ScopeGrant { bucket: bucket.into(), prefix: prefix.into(), permission }
}

fn grants(list: &[(&str, &str, Permission)]) -> Scope {
    Scope::Grants(list.iter().map(|(b, p, perm)| grant(b, p, *perm)).collect())
}

use Access::{List, Read, Write};
use Permission::{Read as R, ReadWrite as RW, Write as W};

#[test]
fn a_folder_grant_reaches_every_key_under_it() {
    let scope = sales_scope();
    assert!(scope.allows("lake", "sales/q1.csv", Read));
    assert!(scope.allows("lake", "sales/2024/eu/q1.parquet", Read));
    assert!(scope.allows("lake", "sales/", Read));
}

#[test]
fn a_folder_grant_does_not_reach_a_sibling_sharing_its_string_prefix() {
    let scope = sales_scope();
    assert!(!scope.allows("lake", "salesforce/x.csv", Read));
    assert!(!scope.allows("lake", "sales", Read));
    assert!(!scope.allows("lake", "sales.csv", Read));
}

#[test]
fn a_configured_bare_prefix_is_normalised_to_its_folder() {
    let location = S3Location::parse_prefix("s3://lake/sales").unwrap();
    assert_eq!(location.prefix(), "sales/");
    let scope = Scope::Grants(vec![ScopeGrant::new(&location, R)]);
    assert!(scope.allows("lake", "sales/x", Read));
    assert!(!scope.allows("lake", "salesforce/x", Read));
}

#[test]
fn an_object_grant_reaches_exactly_that_object_and_never_lists() {
    let scope = grants(&[("lake", "sales/q1.csv", RW)]);
    assert!(scope.allows("lake", "sales/q1.csv", Read));
    assert!(scope.allows("lake", "sales/q1.csv", Write));
    assert!(!scope.allows("lake", "sales/q1.csv.bak", Read));
    assert!(!scope.allows("lake", "sales/q1.csv/x", Read));
    assert!(!scope.allows("lake", "sales/q1.csv", List));
}

#[test]
fn dot_segments_are_refused_under_every_scope() {
    let hostile =
        ["sales/../hr/salaries.csv", "sales/..", "sales/./x", "sales/..\\hr\\salaries.csv", "..", "sales/x\0"];
    for scope in [sales_scope(), Scope::Unrestricted, grants(&[("lake", "", RW)])] {
        for key in hostile {
            for access in [Read, Write, List] {
                assert!(!scope.allows("lake", key, access), "{scope:?} allowed {key:?}");
            }
        }
    }
    // Dots inside a name are ordinary characters.
    assert!(sales_scope().allows("lake", "sales/..hidden/x", Read));
    assert!(sales_scope().allows("lake", "sales/a..b", Read));
}

#[test]
fn keys_longer_than_s3_allows_are_refused() {
    let long = format!("sales/{}", "x".repeat(1024));
    assert!(!Scope::Unrestricted.allows("lake", &long, Read));
}

#[test]
fn a_list_must_stay_inside_the_granted_folder() {
    let scope = sales_scope();
    assert!(scope.allows("lake", "sales/", List));
    assert!(scope.allows("lake", "sales/2024", List));
    assert!(!scope.allows("lake", "sales", List));
    assert!(!scope.allows("lake", "", List));
    assert!(!scope.allows("lake", "s", List));
}

#[test]
fn permissions_cover_their_own_accesses_only() {
    let read = grants(&[("lake", "sales/", R)]);
    let write = grants(&[("lake", "sales/", W)]);
    let both = grants(&[("lake", "sales/", RW)]);
    assert!(read.allows("lake", "sales/x", Read) && read.allows("lake", "sales/", List));
    assert!(!read.allows("lake", "sales/x", Write));
    assert!(write.allows("lake", "sales/x", Write));
    assert!(!write.allows("lake", "sales/x", Read) && !write.allows("lake", "sales/", List));
    assert!(both.allows("lake", "sales/x", Read) && both.allows("lake", "sales/x", Write));
}

#[test]
fn another_bucket_is_out_of_scope() {
    assert!(!sales_scope().allows("lake2", "sales/x", Read));
    assert!(!sales_scope().allows("", "sales/x", Read));
    assert!(!Scope::Unrestricted.allows("", "x", Read));
}

#[test]
fn a_whole_bucket_grant_reaches_every_key_but_not_the_bucket_as_an_object() {
    let scope = grants(&[("lake", "", R)]);
    assert!(scope.allows("lake", "anything/at/all", Read));
    assert!(scope.allows("lake", "", List));
    assert!(!scope.allows("lake", "", Read));
}

#[test]
fn no_grants_allow_nothing_and_unrestricted_leaves_it_to_policy() {
    assert!(!Scope::Grants(vec![]).allows("lake", "sales/x", Read));
    assert!(Scope::Unrestricted.allows("lake", "sales/x", Write));
}

#[test]
fn narrowing_with_unrestricted_changes_nothing() {
    assert_eq!(Scope::Unrestricted.narrow(sales_scope()), sales_scope());
    assert_eq!(sales_scope().narrow(Scope::Unrestricted), sales_scope());
    assert_eq!(Scope::Unrestricted.narrow(Scope::Unrestricted), Scope::Unrestricted);
}

#[test]
fn narrowing_keeps_the_inner_location_and_the_common_permission() {
    let role = grants(&[("lake", "sales/", RW), ("lake", "hr/", R)]);
    let request = grants(&[("lake", "sales/eu/", R), ("lake", "hr/", W), ("other", "", RW)]);
    assert_eq!(role.narrow(request), grants(&[("lake", "sales/eu/", R)]));
}

#[test]
fn narrowing_disjoint_scopes_leaves_nothing() {
    let a = grants(&[("lake", "sales/", RW)]);
    let b = grants(&[("lake", "salesforce/", RW), ("lake", "sales", RW)]);
    assert_eq!(a.narrow(b), Scope::Grants(vec![]));
}

/// Property: a narrowed scope allows exactly what both scopes allow, over random grants and hostile keys.
#[test]
fn narrow_allows_exactly_what_both_scopes_allow() {
    const PREFIXES: [&str; 9] = ["", "a/", "a/b/", "a/b", "ab/", "b/", "a", "a/b/c", "a/c/"];
    const KEYS: [&str; 14] =
        ["", "a", "a/", "a/b", "a/b/", "a/b/c", "a/bc", "ab/x", "b/x", "a/c/d", "a/../b/x", "a/./b", "abc", "a/b/c/d"];
    const BUCKETS: [&str; 2] = ["lake", "pond"];
    const PERMS: [Permission; 3] = [R, W, RW];
    let random_scope = || {
        if random_below(5) == 0 {
            return Scope::Unrestricted;
        }
        Scope::Grants(
            (0..random_below(4))
                .map(|_| {
                    grant(BUCKETS[random_below(2)], PREFIXES[random_below(PREFIXES.len())], PERMS[random_below(3)])
                })
                .collect(),
        )
    };
    for _ in 0..500 {
        let (a, b) = (random_scope(), random_scope());
        let narrowed = a.clone().narrow(b.clone());
        for bucket in BUCKETS {
            for key in KEYS {
                for access in [Read, Write, List] {
                    assert_eq!(
                        narrowed.allows(bucket, key, access),
                        a.allows(bucket, key, access) && b.allows(bucket, key, access),
                        "{a:?} ∩ {b:?} on {bucket}/{key} {access:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn scopes_serialise_compactly_and_round_trip() {
    let scope = grants(&[("lake", "sales/", RW)]);
    let json = serde_json::to_string(&scope).unwrap();
    assert_eq!(json, r#"{"grants":[{"bucket":"lake","prefix":"sales/","permission":"READWRITE"}]}"#);
    assert_eq!(serde_json::from_str::<Scope>(&json).unwrap(), scope);
    assert_eq!(serde_json::to_string(&Scope::Unrestricted).unwrap(), r#""unrestricted""#);
}

#[test]
fn permissions_parse_in_access_grants_spelling() {
    assert_eq!(Permission::parse("READ"), Some(R));
    assert_eq!(Permission::parse("WRITE"), Some(W));
    assert_eq!(Permission::parse("READWRITE"), Some(RW));
    assert_eq!(Permission::parse("read"), None);
    assert_eq!(Permission::parse(""), None);
}
