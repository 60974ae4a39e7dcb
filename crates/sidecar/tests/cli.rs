//! The `lakegate-sidecar` binary's start-up rules, run as a pod would run it. (Its behaviour in front of a
//! central Lakegate is tested in the workspace's integration tests, which use this binary.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failed step fails the test")]

use std::process::{Command, Output};

fn sidecar(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lakegate-sidecar")).args(args).output().expect("run lakegate-sidecar")
}

#[test]
fn the_sidecar_refuses_to_listen_beyond_loopback() {
    let out = sidecar(&["--token-file", "/nonexistent", "--upstream", "http://127.0.0.1:9", "--listen", "0.0.0.0:0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("loopback only"), "{stderr}");
}

#[test]
fn an_invalid_session_name_is_refused_with_iams_rule() {
    let out = sidecar(&[
        "--token-file",
        "/nonexistent",
        "--upstream",
        "http://127.0.0.1:9",
        "--listen",
        "127.0.0.1:0",
        "--session-name",
        "no spaces allowed",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("RoleSessionName"), "{stderr}");
}
