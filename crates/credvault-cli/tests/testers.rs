//! `credvault test` with the protocol testers, against the real servers `.ci/run` starts
//! (`.ci/tester-services`, and PostgreSQL): a PostgreSQL login, and AWS keys checked by STS at
//! the endpoint `AWS_ENDPOINT_URL_STS` names, as the AWS SDKs read it. Without the servers
//! these tests pass vacuously on a developer machine, and fail when `CI` is set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use assert_cmd::Command;
use common::service;

mod common;

fn cv(dir: &Path) -> Command {
    common::credvault_in(dir)
}

/// Runs `credvault ARGS`: exit code and stdout.
fn run(c: &mut Command, args: &[&str], stdin: &str) -> (i32, String) {
    let out = c.args(args).write_stdin(stdin).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

#[test]
fn a_postgres_login_is_tested_from_the_command_line() {
    let Some(url) = service("CREDVAULT_TEST_DATABASE_URL") else {
        return;
    };
    let port = url
        .split("127.0.0.1:")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let pw = std::env::var("PGPASSWORD").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("v");
    assert_eq!(run(&mut cv(&vault), &["init"], "").0, 0);
    let add = |name: &str, password: &str| {
        let fields = [
            "--field=host=127.0.0.1".to_owned(),
            format!("--field=port={port}"),
            "--field=database=postgres".to_owned(),
            "--field=user=postgres".to_owned(),
            "--field=ssl_mode=disable".to_owned(),
        ];
        let mut args = vec!["add", "postgres", name];
        args.extend(fields.iter().map(String::as_str));
        assert_eq!(run(&mut cv(&vault), &args, password).0, 0);
    };
    add("db", &pw);
    add("stale", "not-the-password");
    let (code, out) = run(
        &mut cv(&vault),
        &["test", "db", "--allow-network", "loopback"],
        "",
    );
    assert_eq!(
        (code, out.as_str()),
        (0, "db: ok (logged in to database postgres as postgres)\n")
    );
    let (code, out) = run(
        &mut cv(&vault),
        &["test", "stale", "--allow-network", "loopback"],
        "",
    );
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out,
        "stale: failed (the server rejected the login (SQLSTATE 28P01))\n"
    );
    // Without --allow-network the vault's own host is out of reach.
    let (code, out) = run(&mut cv(&vault), &["test", "db"], "");
    assert_eq!(code, 1);
    assert!(
        out.contains("error (refused: the host is a loopback address"),
        "{out}"
    );
}

#[test]
fn aws_keys_are_tested_at_the_endpoint_the_sdk_setting_names() {
    let Some(sts) = service("CREDVAULT_TEST_STS_URL") else {
        return;
    };
    let key_id = std::env::var("CREDVAULT_TEST_AWS_KEY_ID").unwrap();
    let secret = std::env::var("CREDVAULT_TEST_AWS_SECRET").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("v");
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, &secret).unwrap();
    assert_eq!(run(&mut cv(&vault), &["init"], "").0, 0);
    let (code, _) = run(
        &mut cv(&vault),
        &[
            "add",
            "aws_access_key",
            "aws",
            "--field",
            &format!("access_key_id={key_id}"),
            "--field",
            &format!("secret_access_key=@{}", secret_file.display()),
        ],
        "",
    );
    assert_eq!(code, 0);
    let (code, out) = run(
        cv(&vault).env("AWS_ENDPOINT_URL_STS", &sts),
        &["--json", "test", "aws", "--allow-network", "loopback"],
        "",
    );
    assert_eq!(code, 0, "{out}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["status"], "ok");
    assert!(
        doc["message"]
            .as_str()
            .unwrap()
            .ends_with(":user/credvault-test"),
        "{doc}"
    );
    assert!(!out.contains(&secret));
    // The general setting too, when the STS one is not set.
    let (code, out) = run(
        cv(&vault).env("AWS_ENDPOINT_URL", &sts),
        &["test", "aws", "--allow-network", "loopback"],
        "",
    );
    assert_eq!(code, 0, "{out}");
}
