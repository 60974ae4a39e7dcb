use super::*;

fn target(text: &str) -> S3Location {
    S3Location::parse_target(text).unwrap()
}

#[test]
fn targets_parse_to_bucket_folder_or_object() {
    let cases = [
        ("s3://lake", "", "s3://lake/*"),
        ("s3://lake/", "", "s3://lake/*"),
        ("s3://lake/*", "", "s3://lake/*"),
        ("s3://lake/sales/", "sales/", "s3://lake/sales/*"),
        ("s3://lake/sales/*", "sales/", "s3://lake/sales/*"),
        // A bare string prefix is narrowed to its folder, never widened to `salesforce/`.
        ("s3://lake/sales*", "sales/", "s3://lake/sales/*"),
        ("s3://lake/sales/q1.csv", "sales/q1.csv", "s3://lake/sales/q1.csv"),
        ("s3://my.lake-01/a b/ü%20.csv", "a b/ü%20.csv", "s3://my.lake-01/a b/ü%20.csv"),
    ];
    for (text, prefix, canonical) in cases {
        let location = target(text);
        assert_eq!(location.bucket(), text.trim_start_matches("s3://").split('/').next().unwrap());
        assert_eq!(location.prefix(), prefix, "{text}");
        assert_eq!(location.to_string(), canonical, "{text}");
        assert_eq!(target(canonical), location, "canonical form of {text} must parse back to it");
    }
    assert!(target("s3://lake/sales/q1.csv").is_object());
    assert!(!target("s3://lake/sales/").is_object());
}

#[test]
fn hostile_or_malformed_targets_are_refused() {
    let long_key = format!("s3://lake/{}", "k".repeat(1025));
    let long_bucket = format!("s3://{}/x", "b".repeat(64));
    let refused: [(&str, TargetError); 26] = [
        ("", TargetError::BadScheme),
        ("lake/sales/", TargetError::BadScheme),
        ("S3://lake/x", TargetError::BadScheme),
        ("http://lake/x", TargetError::BadScheme),
        ("s3:/lake/x", TargetError::BadScheme),
        ("s3://", TargetError::EmptyBucket),
        ("s3:///sales/", TargetError::EmptyBucket),
        ("s3://lake/../hr/", TargetError::BadSegment),
        ("s3://lake/sales/../hr/x", TargetError::BadSegment),
        ("s3://lake/sales/..", TargetError::BadSegment),
        ("s3://lake/sales/./x", TargetError::BadSegment),
        ("s3://lake//x", TargetError::BadSegment),
        ("s3://lake/sales//", TargetError::BadSegment),
        ("s3://lake/sa*les/", TargetError::MisplacedWildcard),
        ("s3://lake/*/x", TargetError::MisplacedWildcard),
        ("s3://lake/**", TargetError::MisplacedWildcard),
        ("s3://lake/sales\\..\\hr", TargetError::BadCharacter),
        ("s3://lake/sales/\n", TargetError::BadCharacter),
        ("s3://lake/sales/\0x", TargetError::BadCharacter),
        ("s3://lake*", TargetError::InvalidBucket("lake*".into())),
        ("s3://Lake/x", TargetError::InvalidBucket("Lake".into())),
        ("s3://la_ke/x", TargetError::InvalidBucket("la_ke".into())),
        ("s3://ab/x", TargetError::InvalidBucket("ab".into())),
        ("s3://la..ke/x", TargetError::InvalidBucket("la..ke".into())),
        ("s3://-lake/x", TargetError::InvalidBucket("-lake".into())),
        ("s3://lake./x", TargetError::InvalidBucket("lake.".into())),
    ];
    for (text, expected) in refused {
        assert_eq!(S3Location::parse_target(text), Err(expected.clone()), "{text:?}");
        assert_eq!(S3Location::parse_prefix(text), Err(expected), "{text:?} as prefix");
    }
    assert!(matches!(S3Location::parse_target(&long_key), Err(TargetError::TooLong { .. })));
    assert!(matches!(S3Location::parse_target(&long_bucket), Err(TargetError::InvalidBucket(_))));
    assert!(matches!(S3Location::parse_target(&"s3://lake/".repeat(1000)), Err(TargetError::TooLong { .. })));
}

/// Property: random input never panics the parser, and whatever it accepts is clean and canonical.
#[test]
fn random_targets_never_panic_and_accepted_ones_are_canonical() {
    const PIECES: [&str; 12] = ["s3://", "lake", "/", "*", "..", ".", "a", "\\", "\0", "ü", "//", "-"];
    for _ in 0..5000 {
        let text: String = (0..random_below(10)).map(|_| PIECES[random_below(PIECES.len())]).collect();
        if let Ok(location) = S3Location::parse_target(&text) {
            assert!(!location.prefix().split('/').any(|s| s == ".." || s == "."), "{text:?}");
            assert!(!location.prefix().contains('*'), "{text:?}");
            assert_eq!(S3Location::parse_target(&location.to_string()).as_ref(), Ok(&location), "{text:?}");
        }
    }
}

#[test]
fn default_privilege_covers_the_granting_location() {
    let access = resolve_data_access(
        &target("s3://lake/sales/2024/q1.csv"),
        Permission::Read,
        Privilege::Default,
        &S3Location::parse_prefix("s3://lake/sales/").unwrap(),
    )
    .unwrap();
    assert_eq!(access.matched_grant_target, "s3://lake/sales/*");
    assert!(access.scope.allows("lake", "sales/2023/q4.csv", Access::Read));
    assert!(!access.scope.allows("lake", "sales/2023/q4.csv", Access::Write));
}

#[test]
fn minimal_privilege_covers_exactly_the_target() {
    let granting = S3Location::parse_prefix("s3://lake/sales/").unwrap();
    let object = resolve_data_access(
        &target("s3://lake/sales/2024/q1.csv"),
        Permission::ReadWrite,
        Privilege::Minimal,
        &granting,
    )
    .unwrap();
    assert_eq!(object.matched_grant_target, "s3://lake/sales/2024/q1.csv");
    assert!(object.scope.allows("lake", "sales/2024/q1.csv", Access::Write));
    assert!(!object.scope.allows("lake", "sales/2024/q2.csv", Access::Read));

    let folder =
        resolve_data_access(&target("s3://lake/sales/2024/*"), Permission::Read, Privilege::Minimal, &granting)
            .unwrap();
    assert_eq!(folder.matched_grant_target, "s3://lake/sales/2024/*");
    assert!(folder.scope.allows("lake", "sales/2024/q2.csv", Access::Read));
    assert!(!folder.scope.allows("lake", "sales/2023/q2.csv", Access::Read));
}

#[test]
fn a_target_outside_the_granting_location_is_refused() {
    let granting = S3Location::parse_prefix("s3://lake/sales/").unwrap();
    for outside in ["s3://lake/salesforce/x", "s3://lake/sales", "s3://lake/*", "s3://pond/sales/x"] {
        let result = resolve_data_access(&target(outside), Permission::Read, Privilege::Default, &granting);
        assert!(matches!(result, Err(GrantError::TargetOutsideGrant { .. })), "{outside}");
    }
}

#[test]
fn privileges_parse_in_wire_spelling() {
    assert_eq!(Privilege::parse("Default"), Some(Privilege::Default));
    assert_eq!(Privilege::parse("Minimal"), Some(Privilege::Minimal));
    assert_eq!(Privilege::parse("minimal"), None);
}
