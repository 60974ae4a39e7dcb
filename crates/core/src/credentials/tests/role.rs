use super::*;

#[derive(serde::Deserialize)]
struct Config {
    roles: Vec<RoleProfile>,
}

fn roles(toml_text: &str) -> Result<Vec<RoleProfile>, toml::de::Error> {
    toml::from_str::<Config>(toml_text).map(|c| c.roles)
}

fn analyst() -> RoleProfile {
    roles(
        r#"
        [[roles]]
        name = "analyst"
        role_name = "lake-analyst"
        read_only = true
        prefixes = ["s3://lake/sales/", "s3://lake/shared"]
        max_duration_seconds = 7200
        "#,
    )
    .unwrap()
    .remove(0)
}

#[test]
fn a_role_profile_reads_from_toml() {
    let role = analyst();
    assert_eq!(role.name(), "analyst");
    assert_eq!(role.role_name(), "lake-analyst");
    assert_eq!(role.max_duration_seconds(), 7200);
    assert!(role.matches_arn("arn:aws:iam::123456789012:role/lake-analyst"));
    assert!(!role.matches_arn("arn:aws:iam::123456789012:role/analyst"));
}

#[test]
fn a_read_only_role_scopes_its_prefixes_as_folders_for_reading() {
    let scope = analyst().scope();
    assert!(scope.allows("lake", "sales/x", Access::Read));
    assert!(scope.allows("lake", "shared/x", Access::List));
    assert!(!scope.allows("lake", "sales/x", Access::Write));
    assert!(!scope.allows("lake", "shared.csv", Access::Read));
}

#[test]
fn role_name_defaults_to_the_profile_name_and_duration_to_an_hour() {
    let role = roles("[[roles]]\nname = \"etl\"\nprefixes = [\"s3://lake/raw/\"]").unwrap().remove(0);
    assert!(role.matches_arn("arn:aws:iam::123456789012:role/etl"));
    assert_eq!(role.max_duration_seconds(), DEFAULT_SESSION_SECONDS);
    assert!(role.scope().allows("lake", "raw/x", Access::Write));
}

#[test]
fn a_star_leaves_the_scope_to_policy_but_not_with_read_only() {
    let role = roles("[[roles]]\nname = \"admin\"\nprefixes = [\"*\"]").unwrap().remove(0);
    assert_eq!(role.scope(), Scope::Unrestricted);
    assert!(roles("[[roles]]\nname = \"admin\"\nread_only = true\nprefixes = [\"*\"]").is_err());
}

#[test]
fn inconsistent_role_profiles_are_refused() {
    let refused = [
        // unknown field (a typo must not be ignored)
        "[[roles]]\nname = \"a\"\nprefixes = [\"s3://lake/x/\"]\nreadonly = true",
        // empty prefixes must not mean "everything"
        "[[roles]]\nname = \"a\"\nprefixes = []",
        // prefixes is required
        "[[roles]]\nname = \"a\"",
        // hostile or malformed prefix
        "[[roles]]\nname = \"a\"\nprefixes = [\"s3://lake/x/../y/\"]",
        "[[roles]]\nname = \"a\"\nprefixes = [\"lake/x/\"]",
        // durations outside AWS's bounds
        "[[roles]]\nname = \"a\"\nprefixes = [\"*\"]\nmax_duration_seconds = 899",
        "[[roles]]\nname = \"a\"\nprefixes = [\"*\"]\nmax_duration_seconds = 43201",
        // names IAM would refuse
        "[[roles]]\nname = \"\"\nprefixes = [\"*\"]",
        "[[roles]]\nname = \"a b\"\nprefixes = [\"*\"]",
    ];
    for text in refused {
        assert!(roles(text).is_err(), "accepted:\n{text}");
    }
}

#[test]
fn a_role_profile_serialises_back_to_its_configuration() {
    let role = analyst();
    let text = toml::to_string(&role).unwrap();
    assert!(text.contains("s3://lake/shared/*"));
    let again: RoleProfile = toml::from_str(&text).unwrap();
    assert_eq!(again, role);
}

#[test]
fn session_duration_is_bounded_to_900_and_the_role_maximum() {
    let role = analyst();
    assert_eq!(role.session_duration(None), Ok(3600));
    assert_eq!(role.session_duration(Some(900)), Ok(900));
    assert_eq!(role.session_duration(Some(7200)), Ok(7200));
    for bad in [899, 0, -1, 7201, i64::MAX, i64::MIN] {
        let err = role.session_duration(Some(bad)).unwrap_err();
        assert_eq!(err.sts_code(), "ValidationError");
        assert!(matches!(err, RoleError::DurationOutOfRange { requested, min: 900, max: 7200 } if requested == bad));
    }
}

#[test]
fn the_default_duration_never_exceeds_a_short_role_maximum() {
    let role = roles("[[roles]]\nname = \"a\"\nprefixes = [\"*\"]\nmax_duration_seconds = 1200").unwrap().remove(0);
    assert_eq!(role.session_duration(None), Ok(1200));
}

#[test]
fn role_names_come_from_well_formed_arns_only() {
    assert_eq!(role_name_from_arn("arn:aws:iam::123456789012:role/analyst"), Ok("analyst"));
    assert_eq!(role_name_from_arn("arn:aws:iam::123456789012:role/team/data/analyst"), Ok("analyst"));
    assert_eq!(role_name_from_arn("arn:minio:iam:::role/analyst"), Ok("analyst"));
    for bad in [
        "",
        "analyst",
        "arn:aws:iam::123456789012:user/analyst",
        "arn:aws:s3::123456789012:role/analyst",
        "arn:aws:iam:eu-west-1:123456789012:role/analyst",
        "arn:aws:iam::12345x:role/analyst",
        "arn::iam::123456789012:role/analyst",
        "arn:aws:iam::123456789012:role/",
        "arn:aws:iam::123456789012:role/a b",
        "arn:aws:iam::123456789012:role/team/",
        &format!("arn:aws:iam::123456789012:role/{}", "a".repeat(65)),
        &format!("arn:aws:iam::123456789012:role/{}/a", "p".repeat(2048)),
    ] {
        assert_eq!(role_name_from_arn(bad), Err(RoleError::MalformedArn), "{bad:?}");
    }
}

#[test]
fn an_arn_selects_the_profile_with_its_role_name() {
    let profiles = vec![analyst(), roles("[[roles]]\nname = \"etl\"\nprefixes = [\"*\"]").unwrap().remove(0)];
    let selected = select_role(&profiles, "arn:aws:iam::123456789012:role/etl").unwrap();
    assert_eq!(selected.name(), "etl");
    let err = select_role(&profiles, "arn:aws:iam::123456789012:role/admin").unwrap_err();
    assert_eq!(err, RoleError::UnknownRole("admin".into()));
    assert_eq!(err.sts_code(), "AccessDenied");
}
