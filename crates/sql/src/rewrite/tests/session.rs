use super::*;
use crate::rewrite::{SessionCommand, StatementKind};

fn session(sql: &str) -> SessionCommand {
    match run(sql).unwrap().statements.remove(0).kind {
        StatementKind::Session(cmd) => cmd,
        other => panic!("{sql} is {other:?}"),
    }
}

#[test]
fn client_settings_are_answered_by_the_gateway() {
    assert_eq!(
        session("SET application_name = 'psql'"),
        SessionCommand::Set { name: "application_name".into(), values: vec!["psql".into()], local: false }
    );
    assert_eq!(
        session("SET LOCAL statement_timeout = 5000"),
        SessionCommand::Set { name: "statement_timeout".into(), values: vec!["5000".into()], local: true }
    );
    assert_eq!(
        session("SET TIME ZONE 'UTC'"),
        SessionCommand::Set { name: "timezone".into(), values: vec!["UTC".into()], local: false }
    );
}

#[test]
fn search_path_is_a_gateway_setting() {
    assert_eq!(
        session("SET search_path TO Sales, \"Public\""),
        SessionCommand::Set { name: "search_path".into(), values: vec!["sales".into(), "Public".into()], local: false }
    );
}

#[test]
fn show_and_transaction_control_are_session_statements() {
    assert_eq!(session("SHOW search_path"), SessionCommand::Show("search_path".into()));
    use crate::rewrite::{IsolationLevel, TransactionCommand as T};
    let cases = [
        ("BEGIN", T::Begin { isolation: IsolationLevel::ReadCommitted, read_only: false }),
        ("START TRANSACTION READ ONLY", T::Begin { isolation: IsolationLevel::ReadCommitted, read_only: true }),
        (
            "BEGIN ISOLATION LEVEL SERIALIZABLE, READ WRITE",
            T::Begin { isolation: IsolationLevel::Serializable, read_only: false },
        ),
        ("COMMIT", T::Commit),
        ("END", T::Commit),
        ("ROLLBACK", T::Rollback),
        ("SAVEPOINT A", T::Savepoint("a".into())),
        ("SAVEPOINT \"_pg3_1\"", T::Savepoint("_pg3_1".into())),
        ("RELEASE SAVEPOINT a", T::Release("a".into())),
        ("ROLLBACK TO SAVEPOINT \"Mixed\"", T::RollbackTo("Mixed".into())),
    ];
    for (sql, expected) in cases {
        assert_eq!(session(sql), SessionCommand::Transaction(expected), "{sql}");
    }
}

#[test]
fn deallocate_names_the_prepared_statements_it_drops_as_postgresql_folds_them() {
    use crate::rewrite::Deallocation;
    let cases = [
        ("DEALLOCATE ALL", Deallocation::All),
        ("deallocate prepare all", Deallocation::All),
        ("DEALLOCATE _pg3_0", Deallocation::Named("_pg3_0".into())),
        ("DEALLOCATE PREPARE Q", Deallocation::Named("q".into())),
        ("DEALLOCATE \"ALL\"", Deallocation::Named("ALL".into())),
    ];
    for (sql, expected) in cases {
        assert_eq!(session(sql), SessionCommand::Deallocate(expected), "{sql}");
    }
}

#[test]
fn discard_says_what_it_throws_away() {
    use crate::rewrite::Discarded;
    let cases = [
        ("DISCARD ALL", Discarded::All),
        ("discard plans", Discarded::Plans),
        ("DISCARD SEQUENCES", Discarded::Sequences),
        ("DISCARD TEMP", Discarded::Temp),
        ("DISCARD TEMPORARY", Discarded::Temp),
    ];
    for (sql, expected) in cases {
        assert_eq!(session(sql), SessionCommand::Discard(expected), "{sql}");
    }
}

#[test]
fn a_pools_reset_releases_what_no_session_can_hold() {
    use crate::rewrite::Released;
    let cases = [
        ("SELECT pg_advisory_unlock_all()", Released::AdvisoryLocks),
        ("CLOSE ALL", Released::Cursors),
        ("UNLISTEN *", Released::Notifications),
        ("UNLISTEN orders_changed", Released::Notifications),
    ];
    for (sql, expected) in cases {
        assert_eq!(session(sql), SessionCommand::Release(expected), "{sql}");
    }
}

#[test]
fn version_and_current_schema_probes_are_session_statements() {
    assert_eq!(session("SELECT version()"), SessionCommand::Version);
    assert_eq!(session("select current_schema()"), SessionCommand::CurrentSchema);
}

#[test]
fn changing_role_is_refused() {
    for sql in ["SET ROLE postgres", "SET SESSION AUTHORIZATION postgres", "RESET ROLE", "SET role = 'postgres'"] {
        assert_state(&err(sql), "42501");
    }
}

#[test]
fn server_settings_are_refused() {
    for sql in
        ["SET standard_conforming_strings = off", "SET row_security = off", "SET session_replication_role = replica"]
    {
        assert_state(&err(sql), "42501");
    }
}
