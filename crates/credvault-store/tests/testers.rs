//! Every built-in credential type's test against a real server: PostgreSQL, MariaDB, Redis,
//! an SMTP server (aiosmtpd), OpenSSH's sshd, AWS STS (moto_server checking SigV4
//! signatures), an OAuth2 token endpoint (oauthlib). Each logs in with the right secret, is
//! rejected with a wrong one (`failed`, never `error`), cannot reach a closed port (`error`),
//! and refuses loopback unless the vault allows it; no outcome quotes a secret.
//!
//! `.ci/run` starts the servers (`.ci/tester-services`) and PostgreSQL, and exports where
//! they are. Without those variables these tests pass vacuously on a developer machine, and
//! fail when `CI` is set.
#![cfg(feature = "testers")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use credvault_store::audit::{Action, Details, MemorySink, TestStatus};
use credvault_store::net::AddressClass;
use credvault_store::{
    AuditTarget, AwsStsTester, CredentialTester, HttpTester, LocalKeyring, MemoryStorage,
    MysqlTester, NewCredential, Outbound, PostgresTester, RedisTester, Registry, SmtpTester,
    SshTester, Store, TenantId, TestOutcome, TesterRegistry,
};
use serde_json::{json, Value};

/// A service's address from its variable, or `None` on a developer machine without it.
/// Panics when `CI` is set: CI must not pass by skipping.
fn service(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) => Some(v),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("{var} is not set but CI is: .ci/run starts the tester services and sets it")
        }
        Err(_) => {
            eprintln!(
                "skipped: {var} is not set (source .ci/tester-services; tester_services_start)"
            );
            None
        }
    }
}

fn password() -> String {
    std::env::var("CREDVAULT_TEST_TESTER_PASSWORD").expect("the tester services' password")
}

fn host_port(addr: &str) -> (String, u16) {
    let (h, p) = addr.rsplit_once(':').unwrap();
    (h.to_owned(), p.parse().unwrap())
}

fn loopback() -> Outbound {
    Outbound::new()
        .allow(AddressClass::Loopback)
        .with_timeout(Duration::from_secs(5))
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Validates `fields` as a built-in `type_name` credential and tests it.
fn run(tester: &dyn CredentialTester, type_name: &str, fields: Value) -> TestOutcome {
    let registry = Registry::with_builtins();
    let ty = registry.get(type_name).unwrap().clone();
    let credential = ty.validate(&fields).unwrap();
    let out = tester.test(&ty, &credential);
    for (k, v) in fields.as_object().unwrap() {
        if ty.is_secret(k) == Some(true) {
            let v = v.as_str().unwrap();
            assert!(
                v.len() < 4 || !out.message.contains(v),
                "{type_name}: the outcome quotes {k}: {out:?}"
            );
        }
    }
    out
}

/// Sets `key` in a JSON object.
fn with(mut fields: Value, key: &str, value: Value) -> Value {
    fields[key] = value;
    fields
}

fn assert_status(out: &TestOutcome, status: TestStatus, words: &str) {
    assert_eq!(out.status, status, "{out:?}");
    assert!(out.message.contains(words), "wanted {words:?} in {out:?}");
}

/// The four cases every protocol tester answers: right login, wrong login, closed port,
/// loopback not allowed.
fn the_usual_four(
    make: &dyn Fn(Outbound) -> Box<dyn CredentialTester>,
    type_name: &str,
    good: Value,
    wrong_key: &str,
    ok_words: &str,
    rejected_words: &str,
) {
    let tester = make(loopback());
    let out = run(&*tester, type_name, good.clone());
    assert_status(&out, TestStatus::Ok, ok_words);

    let wrong = with(good.clone(), wrong_key, json!("wrong-Secret-1234567890"));
    let out = run(&*tester, type_name, wrong);
    assert_status(&out, TestStatus::Failed, rejected_words);

    let closed = with(good.clone(), "port", json!(closed_port()));
    let out = run(&*tester, type_name, closed);
    assert_eq!(out.status, TestStatus::Error, "{out:?}");

    // The default policy reaches public addresses only.
    let out = run(&*make(Outbound::new()), type_name, good);
    assert_status(
        &out,
        TestStatus::Error,
        "refused: the host is a loopback address",
    );
}

#[test]
fn postgres_logs_in_and_tells_a_wrong_password_from_a_missing_database() {
    let Some(url) = service("CREDVAULT_TEST_DATABASE_URL") else {
        return;
    };
    let cfg: postgres::Config = url.parse().unwrap();
    let port = cfg.get_ports()[0];
    let pw = std::env::var("PGPASSWORD").unwrap();
    let good = json!({"host": "127.0.0.1", "port": port, "database": "postgres",
        "user": "postgres", "password": pw, "ssl_mode": "prefer"});
    the_usual_four(
        &|o| Box::new(PostgresTester::new(o)),
        "postgres",
        good.clone(),
        "password",
        "logged in to database postgres as postgres",
        "the server rejected the login (SQLSTATE 28P01)",
    );
    let tester = PostgresTester::new(loopback());
    let out = run(
        &tester,
        "postgres",
        with(good.clone(), "database", json!("nope")),
    );
    assert_status(&out, TestStatus::Failed, "does not exist (SQLSTATE 3D000)");
    // `disable` in the clear, to loopback.
    let out = run(
        &tester,
        "postgres",
        with(good.clone(), "ssl_mode", json!("disable")),
    );
    assert_status(&out, TestStatus::Ok, "logged in");
    // `require` verifies the server against the system's roots, which do not know the test
    // CA that signed this server's certificate (`prefer` above fell back to the clear, on
    // loopback, as libpq does).
    let out = run(
        &tester,
        "postgres",
        with(good, "ssl_mode", json!("require")),
    );
    assert_status(
        &out,
        TestStatus::Error,
        "could not reach the server, or TLS failed",
    );
}

#[test]
fn mysql_logs_in_to_mariadb() {
    let Some(addr) = service("CREDVAULT_TEST_MYSQL") else {
        return;
    };
    let (host, port) = host_port(&addr);
    let good = json!({"host": host, "port": port, "database": "credvault",
        "user": "credvault", "password": password(), "ssl": false});
    the_usual_four(
        &|o| Box::new(MysqlTester::new(o)),
        "mysql",
        good.clone(),
        "password",
        "logged in to database credvault as credvault",
        "the server rejected the login (error 1045)",
    );
    let tester = MysqlTester::new(loopback());
    let out = run(
        &tester,
        "mysql",
        with(good.clone(), "database", json!("other")),
    );
    assert_status(
        &out,
        TestStatus::Failed,
        "may not use the database (error 1044)",
    );
    // TLS asked for, and this server has none: an error, and no login sent in the clear.
    let out = run(&tester, "mysql", with(good, "ssl", json!(true)));
    assert_eq!(out.status, TestStatus::Error, "{out:?}");
}

#[test]
fn redis_authenticates_an_acl_user_and_the_default_one() {
    let Some(addr) = service("CREDVAULT_TEST_REDIS") else {
        return;
    };
    let (host, port) = host_port(&addr);
    let good = json!({"host": host, "port": port, "username": "credvault", "password": password()});
    the_usual_four(
        &|o| Box::new(RedisTester::new(o)),
        "redis",
        good.clone(),
        "password",
        "authenticated; PING answered",
        "the server rejected the login",
    );
    let tester = RedisTester::new(loopback());
    // The default user with its own password, then with none.
    let default_user = json!({"host": host, "port": port, "password": format!("default-{}", password()), "database": 3});
    assert_status(
        &run(&tester, "redis", default_user),
        TestStatus::Ok,
        "PING answered",
    );
    let out = run(&tester, "redis", json!({"host": host, "port": port}));
    assert_status(&out, TestStatus::Failed, "NOAUTH");
}

#[test]
fn smtp_logs_in_without_sending_mail() {
    let Some(addr) = service("CREDVAULT_TEST_SMTP") else {
        return;
    };
    let (host, port) = host_port(&addr);
    let good = json!({"host": host, "port": port, "security": "none",
        "user": "credvault", "password": password()});
    the_usual_four(
        &|o| Box::new(SmtpTester::new(o)),
        "smtp",
        good.clone(),
        "password",
        "logged in as credvault",
        "the server rejected the login (535",
    );
    // STARTTLS asked for, and this server has none: no login is sent in the clear.
    let tester = SmtpTester::new(loopback());
    let out = run(&tester, "smtp", with(good, "security", json!("starttls")));
    assert_eq!(out.status, TestStatus::Error, "{out:?}");
}

#[test]
fn ssh_authenticates_with_ed25519_and_an_encrypted_rsa_key() {
    let Some(addr) = service("CREDVAULT_TEST_SSH") else {
        return;
    };
    let dir = std::path::PathBuf::from(std::env::var("CREDVAULT_TEST_SSH_DIR").unwrap());
    let user = std::env::var("CREDVAULT_TEST_SSH_USER").unwrap();
    let key = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let (host, port) = host_port(&addr);
    let good =
        json!({"host": host, "port": port, "username": user, "private_key": key("id_ed25519")});
    // The right key, a key the server does not know, a closed port, loopback refused.
    let tester = SshTester::new(loopback());
    let out = run(&tester, "ssh_private_key", good.clone());
    assert_status(
        &out,
        TestStatus::Ok,
        &format!("logged in as {user}; host key SHA256:"),
    );
    let host_key = ssh_fingerprint(&dir.join("host_ed25519.pub"));
    assert!(out.message.ends_with(&host_key), "{out:?} vs {host_key}");
    let out = run(
        &tester,
        "ssh_private_key",
        with(good.clone(), "private_key", json!(key("other"))),
    );
    assert_status(&out, TestStatus::Failed, "the server rejected the key");
    let out = run(
        &tester,
        "ssh_private_key",
        with(good.clone(), "port", json!(closed_port())),
    );
    assert_eq!(out.status, TestStatus::Error, "{out:?}");
    let out = run(
        &SshTester::new(Outbound::new()),
        "ssh_private_key",
        good.clone(),
    );
    assert_status(
        &out,
        TestStatus::Error,
        "refused: the host is a loopback address",
    );
    // An encrypted RSA key: its passphrase opens it, a wrong one does not.
    let rsa = with(good, "private_key", json!(key("id_rsa")));
    let out = run(
        &tester,
        "ssh_private_key",
        with(rsa.clone(), "passphrase", json!(password())),
    );
    assert_status(&out, TestStatus::Ok, "logged in");
    let out = run(
        &tester,
        "ssh_private_key",
        with(rsa, "passphrase", json!("not-the-passphrase")),
    );
    assert_status(&out, TestStatus::Failed, "does not decode");
}

/// `ssh-keygen -lf`'s SHA-256 fingerprint of a public key file: a second implementation.
fn ssh_fingerprint(path: &std::path::Path) -> String {
    let out = std::process::Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace().nth(1).unwrap().to_owned()
}

#[test]
fn aws_keys_are_checked_by_sts_with_their_signature() {
    let Some(url) = service("CREDVAULT_TEST_STS_URL") else {
        return;
    };
    let key_id = std::env::var("CREDVAULT_TEST_AWS_KEY_ID").unwrap();
    let secret = std::env::var("CREDVAULT_TEST_AWS_SECRET").unwrap();
    let tester = AwsStsTester::new(loopback()).with_endpoint(url.clone());
    let good = json!({"access_key_id": key_id, "secret_access_key": secret});
    let out = run(&tester, "aws_access_key", good.clone());
    assert_status(&out, TestStatus::Ok, "the key belongs to arn:aws:iam::");
    assert!(out.message.ends_with(":user/credvault-test"), "{out:?}");
    // A wrong secret for the key: the signature does not match.
    let wrong = with(good.clone(), "secret_access_key", json!("A".repeat(40)));
    let out = run(&tester, "aws_access_key", wrong);
    assert_status(
        &out,
        TestStatus::Failed,
        "STS rejected the key (SignatureDoesNotMatch)",
    );
    // A key that does not exist.
    let unknown = with(good.clone(), "access_key_id", json!("AKIAZZZZZZZZZZZZZZZZ"));
    let out = run(&tester, "aws_access_key", unknown);
    assert_status(
        &out,
        TestStatus::Failed,
        "STS rejected the key (InvalidClientTokenId)",
    );
    // A closed port; loopback refused by default.
    let closed =
        AwsStsTester::new(loopback()).with_endpoint(format!("http://127.0.0.1:{}/", closed_port()));
    assert_eq!(
        run(&closed, "aws_access_key", good.clone()).status,
        TestStatus::Error
    );
    let out = run(
        &AwsStsTester::new(Outbound::new()).with_endpoint(url),
        "aws_access_key",
        good,
    );
    assert_status(
        &out,
        TestStatus::Error,
        "refused: the host is a loopback address",
    );
}

#[test]
fn oauth2_client_credentials_get_a_token_from_the_endpoint() {
    let Some(url) = service("CREDVAULT_TEST_OAUTH_URL") else {
        return;
    };
    let tester = HttpTester::with_outbound(loopback());
    let good = json!({"token_url": url, "client_id": "credvault-client",
        "client_secret": password(), "scope": "read"});
    assert_status(
        &run(&tester, "oauth2_client_credentials", good.clone()),
        TestStatus::Ok,
        "HTTP 200",
    );
    let wrong = with(
        good.clone(),
        "client_secret",
        json!("wrong-Secret-1234567890"),
    );
    let out = run(&tester, "oauth2_client_credentials", wrong);
    assert_status(
        &out,
        TestStatus::Failed,
        "rejected by the service (HTTP 401)",
    );
    let bad_scope = with(good, "scope", json!("admin"));
    let out = run(&tester, "oauth2_client_credentials", bad_scope);
    assert_status(&out, TestStatus::Failed, "unexpected status HTTP 400");
}

#[test]
fn every_built_in_type_with_a_test_has_a_tester_and_mongodb_says_why_not() {
    let registry = Registry::with_builtins();
    let testers = TesterRegistry::with_defaults();
    for name in registry.builtin_names() {
        let ty = registry.get(name).unwrap();
        let Some(test) = &ty.definition().test else {
            continue;
        };
        if test.kind == credvault_store::schema::TestKind::Mongodb {
            assert!(testers.get(test.kind).is_none());
            assert!(
                ty.definition()
                    .description
                    .as_deref()
                    .unwrap_or("")
                    .contains("no MongoDB tester"),
                "{:?}",
                ty.definition().description
            );
        } else {
            assert!(testers.get(test.kind).is_some(), "{name}: no tester");
        }
    }
}

/// Through the store: the result is kept on the credential and audited, without the secret.
#[test]
fn a_store_test_is_recorded_and_audited() {
    let Some(addr) = service("CREDVAULT_TEST_REDIS") else {
        return;
    };
    let (host, port) = host_port(&addr);
    let audit = Arc::new(MemorySink::new());
    let store = Store::new(
        Arc::new(MemoryStorage::new()),
        Arc::new(LocalKeyring::generate().unwrap()),
        AuditTarget::Sink(audit.clone()),
    )
    .with_testers(TesterRegistry::with_defaults_allowing(&[
        AddressClass::Loopback,
    ]));
    let t = TenantId::new("acme").unwrap();
    store.create_tenant(&t, "Acme", "admin").unwrap();
    let s = store.tenant(&t, "alice").unwrap();
    for (name, pw, status) in [
        ("cache", password(), TestStatus::Ok),
        (
            "stale",
            "Wrong-pw-0123456789".to_owned(),
            TestStatus::Failed,
        ),
    ] {
        let info = s
            .create(NewCredential::new(
                "redis",
                name,
                json!({"host": host, "port": port, "username": "credvault", "password": pw}),
            ))
            .unwrap();
        let out = s.test(&info.id).unwrap();
        assert_eq!(out.status, status, "{out:?}");
        let ev = audit.events().pop().unwrap();
        assert_eq!(ev.action, Action::Tested);
        assert!(
            matches!(&ev.details, Some(Details::Tested { status: st, .. }) if *st == status),
            "{ev:?}"
        );
        let shown = s.get(&info.id).unwrap();
        assert_eq!(shown.test_status.as_deref(), Some(out.status_str()));
        assert_eq!(shown.test_message.as_deref(), Some(out.message.as_str()));
    }
    let text = serde_json::to_string(&audit.events()).unwrap();
    assert!(!text.contains(&password()) && !text.contains("Wrong-pw-0123456789"));
}
