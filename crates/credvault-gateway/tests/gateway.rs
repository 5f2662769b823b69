//! The gateway over real TLS on a loopback port: what a key may do, on which host, how often,
//! and that every request leaves exactly one audit record.

#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use common::*;
use credvault_gateway::{ApiScope, GatewayConfig, KeyPolicy, RateLimit};
use credvault_store::audit::{Action, Details, Outcome, Query};
use credvault_store::{AuditEvent, SECRET_MARKER};

fn all_scopes() -> [ApiScope; 3] {
    [ApiScope::Read, ApiScope::Reveal, ApiScope::Totp]
}

fn events(h: &Harness, action: Action) -> Vec<AuditEvent> {
    h.vault
        .audit_events(&Query::new().action(action))
        .unwrap()
        .events
        .into_iter()
        .map(|e| e.event)
        .collect()
}

fn details(e: &AuditEvent) -> (String, String, u16, Option<String>) {
    match &e.details {
        Some(Details::Request {
            method,
            route,
            status,
            api_key,
            ..
        }) => (method.clone(), route.clone(), *status, api_key.clone()),
        other => panic!("not a request record: {other:?}"),
    }
}

#[test]
fn a_key_lists_masked_reveals_and_gets_codes_over_tls_and_each_request_is_recorded_once() {
    let h = Harness::start(|c| c);
    let key = h.key(KeyPolicy::new(tenant("acme"), all_scopes()).name("billing-bot"));
    let key_id = key[4..16].to_owned();

    let list = h.send(Req::new("acme.localhost", "GET", "/api/credentials").key(&key));
    assert_eq!(
        list.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&list.body)
    );
    let body = list.json();
    let creds = body["credentials"].as_array().unwrap();
    assert_eq!(creds.len(), 2, "acme's two credentials, none of globex's");
    let text = String::from_utf8_lossy(&list.body);
    assert!(!text.contains(PASSWORD), "a list never holds a secret");
    let stripe = creds.iter().find(|c| c["name"] == "stripe-live").unwrap();
    assert_eq!(stripe["fields"]["password"], SECRET_MARKER);
    assert_eq!(stripe["fields"]["username"], "ops@acme.example");

    let path = format!("/api/credentials/{}/reveal", h.stripe);
    let rv = h.send(
        Req::new("acme.localhost", "POST", &path)
            .key(&key)
            .body(br#"{"fields":["password","username"],"service":"billing"}"#),
    );
    assert_eq!(rv.status, 200, "{}", String::from_utf8_lossy(&rv.body));
    assert_eq!(rv.header("cache-control"), Some("no-store"));
    let v = rv.json();
    assert_eq!(v["fields"]["password"], PASSWORD);
    assert_eq!(v["fields"]["username"], "ops@acme.example");

    let path = format!("/api/credentials/{}/totp", h.stripe);
    let code = h.send(Req::new("acme.localhost", "POST", &path).key(&key));
    assert_eq!(code.status, 200, "{}", String::from_utf8_lossy(&code.body));
    let code = code.json()["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 6);
    // The code is the credential's: the store accepts it (once).
    let acme = h.vault.store().tenant(&tenant("acme"), "test").unwrap();
    acme.verify_totp(&h.stripe, &code).unwrap();
    // An empty body under a JSON content type, and a service label, are accepted; a body that
    // is not the expected JSON gets the one error shape.
    for body in [&b""[..], br#"{"service":"login-bot"}"#] {
        let r = h.send(
            Req::new("acme.localhost", "POST", &path)
                .key(&key)
                .body(body),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    let r = h.send(
        Req::new("acme.localhost", "POST", &path)
            .key(&key)
            .body(b"{\"service\": 5}"),
    );
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_request"));

    // One request record each, with where it came from and what it did.
    let rec = h.request_record(&rv.request_id());
    assert_eq!(rec.tenant, "acme");
    assert_eq!(rec.actor, format!("apikey:{key_id}"));
    assert_eq!(rec.source_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(rec.client_host.as_deref(), Some("acme.localhost"));
    assert_eq!(rec.outcome, Outcome::Success);
    assert_eq!(
        details(&rec),
        (
            "POST".into(),
            "/api/credentials/{id}/reveal".into(),
            200,
            Some(key_id.clone())
        )
    );
    // The store's own record of the access carries the same request id, host and service.
    let accessed: Vec<_> = events(&h, Action::Accessed)
        .into_iter()
        .filter(|e| e.request_id.as_deref() == Some(rv.request_id().as_str()))
        .collect();
    assert_eq!(accessed.len(), 1);
    assert_eq!(accessed[0].client_host.as_deref(), Some("acme.localhost"));
    match &accessed[0].details {
        Some(Details::Accessed { service, fields }) => {
            assert_eq!(service.as_deref(), Some("billing"));
            assert_eq!(fields, &["password", "username"]);
        }
        other => panic!("{other:?}"),
    }
    let rec = h.request_record(&list.request_id());
    assert_eq!(details(&rec).1, "/api/credentials");
    // No audit record holds the key or a secret.
    let log = std::fs::read_dir(h.dir.path().join("vault/audit"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect::<Vec<_>>()
        .concat();
    let log = String::from_utf8_lossy(&log);
    assert!(!log.contains(&key) && !log.contains(&key[16..]));
    assert!(!log.contains(PASSWORD));
}

#[test]
fn hosts_tenants_scopes_and_key_states_are_enforced_and_every_refusal_recorded() {
    let h = Harness::start(|c| c);
    let acme = h.key(KeyPolicy::new(tenant("acme"), all_scopes()));
    let read_only = h.key(KeyPolicy::new(tenant("acme"), [ApiScope::Read]));
    let narrow = h.key(KeyPolicy::new(tenant("acme"), all_scopes()).credentials(["github-*"]));
    let expired = h.key(KeyPolicy::new(tenant("acme"), all_scopes()).expires_at(now_ms() - 1));
    let revoked = h.key(KeyPolicy::new(tenant("acme"), all_scopes()));
    h.keys.revoke(&revoked[4..16], now_ms()).unwrap();
    let stripe = format!("/api/credentials/{}", h.stripe);
    let stripe_reveal = format!("{stripe}/reveal");
    let globex_path = format!("/api/credentials/{}", h.globex_cred);

    let cases: Vec<(&str, Req<'_>, u16, &str, Outcome)> = vec![
        (
            "a key for acme on globex's host",
            Req::new("globex.localhost", "GET", "/api/credentials").key(&acme),
            403,
            "wrong_tenant",
            Outcome::Denied,
        ),
        (
            "a host no tenant is served on",
            Req::new("unmapped.localhost", "GET", "/api/credentials").key(&acme),
            421,
            "unknown_host",
            Outcome::Denied,
        ),
        (
            "a Host other than the connection's server name",
            Req::new("globex.localhost", "GET", "/api/credentials")
                .sni("acme.localhost")
                .key(&acme),
            421,
            "unknown_host",
            Outcome::Denied,
        ),
        (
            "no key",
            Req::new("acme.localhost", "GET", "/api/credentials"),
            401,
            "unauthenticated",
            Outcome::Denied,
        ),
        (
            "a key with a wrong checksum",
            Req::new("acme.localhost", "GET", "/api/credentials")
                .key("cvk_000000000000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            401,
            "unauthenticated",
            Outcome::Denied,
        ),
        (
            "an expired key",
            Req::new("acme.localhost", "GET", "/api/credentials").key(&expired),
            401,
            "unauthenticated",
            Outcome::Denied,
        ),
        (
            "a revoked key",
            Req::new("acme.localhost", "GET", "/api/credentials").key(&revoked),
            401,
            "unauthenticated",
            Outcome::Denied,
        ),
        (
            "a reveal without the reveal scope",
            Req::new("acme.localhost", "POST", &stripe_reveal)
                .key(&read_only)
                .body(b"{}"),
            403,
            "insufficient_scope",
            Outcome::Denied,
        ),
        (
            "a credential outside the key's globs",
            Req::new("acme.localhost", "POST", &stripe_reveal)
                .key(&narrow)
                .body(b"{}"),
            404,
            "not_found",
            Outcome::Failure,
        ),
        (
            "another tenant's credential id",
            Req::new("acme.localhost", "GET", &globex_path).key(&acme),
            404,
            "not_found",
            Outcome::Failure,
        ),
        (
            "a route that does not exist",
            Req::new("acme.localhost", "GET", "/api/nothing").key(&acme),
            404,
            "not_found",
            Outcome::Failure,
        ),
        (
            "a body that is not JSON",
            Req::new("acme.localhost", "POST", &stripe_reveal)
                .key(&acme)
                .body(b"{not json"),
            400,
            "invalid_request",
            Outcome::Failure,
        ),
        (
            "an unknown field in the body",
            Req::new("acme.localhost", "POST", &stripe_reveal)
                .key(&acme)
                .body(br#"{"feilds":["password"]}"#),
            400,
            "invalid_request",
            Outcome::Failure,
        ),
    ];
    for (what, req, status, code, outcome) in cases {
        let host = req.host;
        let r = h.send(req);
        let text = String::from_utf8_lossy(&r.body).into_owned();
        assert_eq!(r.status, status, "{what}: {text}");
        assert_eq!(r.code(), code, "{what}: {text}");
        assert!(
            !text.contains(PASSWORD) && !text.contains("globex password"),
            "{what}"
        );
        let rec = h.request_record(&r.request_id());
        assert_eq!(rec.outcome, outcome, "{what}");
        assert_eq!(details(&rec).2, status, "{what}");
        assert_eq!(rec.client_host.as_deref(), Some(host), "{what}");
        if what == "a key for acme on globex's host" {
            // Recorded against the host's tenant, naming the key that tried.
            assert_eq!(rec.tenant, "globex");
            assert_eq!(details(&rec).3.as_deref(), Some(&acme[4..16]));
        }
    }
    // The narrow key still reaches what its globs cover.
    let r = h.send(
        Req::new(
            "acme.localhost",
            "POST",
            &format!("/api/credentials/{}/reveal", h.github),
        )
        .key(&narrow)
        .body(br#"{"fields":["password"]}"#),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["fields"]["password"], "github password value");
    // And lists only those.
    let r = h.send(Req::new("acme.localhost", "GET", "/api/credentials").key(&narrow));
    let names: Vec<_> = r.json()["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["github-prod"]);
    let _ = stripe;
}

#[test]
fn a_key_over_its_rate_is_refused_with_retry_after() {
    let h = Harness::start(|c| c);
    let key = h.key(
        KeyPolicy::new(tenant("acme"), all_scopes()).rate_limit(RateLimit {
            count: 2,
            per_seconds: 60,
        }),
    );
    let other = h.key(KeyPolicy::new(tenant("acme"), all_scopes()));
    let get = || h.send(Req::new("acme.localhost", "GET", "/api/credentials/types").key(&key));
    assert_eq!(get().status, 200);
    assert_eq!(get().status, 200);
    let r = get();
    assert_eq!(r.status, 429);
    assert_eq!(r.code(), "rate_limited");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(h.request_record(&r.request_id()).outcome, Outcome::Denied);
    // Another key of the tenant is not held back by this one's limit.
    let r = h.send(Req::new("acme.localhost", "GET", "/api/credentials/types").key(&other));
    assert_eq!(r.status, 200);
}

#[test]
fn a_tenant_over_its_rate_is_refused_whatever_the_key() {
    let h = Harness::start(|c| {
        c.tenant_rate_for(
            tenant("acme"),
            RateLimit {
                count: 3,
                per_seconds: 60,
            },
        )
    });
    let keys: Vec<String> = (0..4)
        .map(|_| h.key(KeyPolicy::new(tenant("acme"), all_scopes())))
        .collect();
    let statuses: Vec<u16> = keys
        .iter()
        .map(|k| {
            h.send(Req::new("acme.localhost", "GET", "/api/credentials/types").key(k))
                .status
        })
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429]);
    // Globex has its own budget.
    let g = h.key(KeyPolicy::new(tenant("globex"), all_scopes()));
    let r = h.send(Req::new("globex.localhost", "GET", "/api/credentials/types").key(&g));
    assert_eq!(r.status, 200);
}

/// The source IP recorded for a request carrying `X-Forwarded-For: xff` on a gateway set up
/// by `cfg`.
fn recorded_ip(cfg: impl FnOnce(GatewayConfig) -> GatewayConfig, xff: &str) -> Option<String> {
    let h = Harness::start(cfg);
    let key = h.key(KeyPolicy::new(tenant("acme"), all_scopes()));
    let r = h.send(
        Req::new("acme.localhost", "GET", "/api/credentials/types")
            .key(&key)
            .header("X-Forwarded-For", xff),
    );
    h.request_record(&r.request_id()).source_ip
}

#[test]
fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
    assert_eq!(
        recorded_ip(|c| c, "203.0.113.9").as_deref(),
        Some("127.0.0.1"),
        "an untrusted peer cannot choose the recorded address"
    );
    assert_eq!(
        recorded_ip(
            |c| c.trust_proxy("127.0.0.1".parse().unwrap()),
            "198.51.100.7, 203.0.113.9"
        )
        .as_deref(),
        Some("203.0.113.9"),
        "the address the trusted proxy saw"
    );
    // Ranges: every trusted hop from the right is skipped, the first other address is the
    // client's.
    assert_eq!(
        recorded_ip(
            |c| {
                c.trust_proxy_range("127.0.0.0/8".parse().unwrap())
                    .trust_proxy_range("10.0.0.0/8".parse().unwrap())
            },
            "192.0.2.1, 198.51.100.7, 10.1.2.3"
        )
        .as_deref(),
        Some("198.51.100.7")
    );
}

#[test]
fn an_oversized_body_is_refused_and_recorded() {
    let h = Harness::start(|c| c.body_limit(4096));
    let key = h.key(KeyPolicy::new(tenant("acme"), all_scopes()));
    let big = format!(r#"{{"fields":[],"service":"{}"}}"#, "x".repeat(8192));
    let r = h.send(
        Req::new(
            "acme.localhost",
            "POST",
            &format!("/api/credentials/{}/reveal", h.stripe),
        )
        .key(&key)
        .body(big.as_bytes()),
    );
    assert_eq!(r.status, 413, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(details(&h.request_record(&r.request_id())).2, 413);
}

#[test]
fn health_needs_no_key_and_types_are_listed() {
    let h = Harness::start(|c| c);
    let r = h.send(Req::new("acme.localhost", "GET", "/v1/sys/health"));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    let key = h.key(KeyPolicy::new(tenant("acme"), [ApiScope::Read]));
    let r = h.send(Req::new("acme.localhost", "GET", "/api/credentials/types").key(&key));
    let types = r.json();
    let names: Vec<_> = types["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.iter().any(|n| n == "website_login"), "{names:?}");
    let r = h.send(
        Req::new(
            "acme.localhost",
            "GET",
            "/api/credentials/types/website_login",
        )
        .key(&key),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["name"], "website_login");
    let r = h.send(Req::new("acme.localhost", "GET", "/api/credentials/types/nope").key(&key));
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
}

#[test]
fn tls_1_2_is_refused_unless_enabled_and_a_reloaded_certificate_serves_new_connections() {
    let h = Harness::start(|c| c);
    let tls12 = h.client_config(&[&rustls::version::TLS12]);
    assert!(
        h.connect("acme.localhost", tls12).is_err(),
        "TLS 1.2 only when asked for"
    );
    let tls13 = h.client_config(&[&rustls::version::TLS13]);
    let first = h.connect("acme.localhost", tls13.clone()).unwrap();
    let served = first.conn.peer_certificates().unwrap()[0].clone();

    // A new certificate in the same files; a bad pair is refused and the old one stays.
    let (cert_pem, key_pem, new_der) = h.ca.leaf(&HOSTS);
    std::fs::write(&h.cert_path, &cert_pem).unwrap();
    std::fs::write(&h.key_path, h.ca.leaf(&HOSTS).1).unwrap();
    assert!(
        h.cert.reload().is_err(),
        "a key that is not the certificate's"
    );
    let still = h.connect("acme.localhost", tls13.clone()).unwrap();
    assert_eq!(still.conn.peer_certificates().unwrap()[0], served);
    std::fs::write(&h.key_path, key_pem).unwrap();
    h.cert.reload().unwrap();
    let next = h.connect("acme.localhost", tls13).unwrap();
    assert_eq!(next.conn.peer_certificates().unwrap()[0], new_der);
    assert_ne!(new_der, served);
}

#[test]
fn a_client_that_never_finishes_its_headers_is_dropped() {
    use std::io::{Read, Write};
    let h = Harness::start_with(
        |c| c,
        |tls| {
            credvault_gateway::ServeOptions::tls(tls)
                .header_timeout(std::time::Duration::from_millis(300))
        },
    );
    let mut s = h
        .connect(
            "acme.localhost",
            h.client_config(&[&rustls::version::TLS13]),
        )
        .unwrap();
    s.write_all(b"GET /api/credentials HTTP/1.1\r\nHost: acme.localhost\r\n")
        .unwrap();
    s.flush().unwrap();
    // The server closes (the read ends, with or without a 408) long before the client's own
    // 30 s read timeout; a server that waited forever would fail this with a timeout error.
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf) {
        Ok(_) => {}
        Err(e) => assert_ne!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}"),
    }
    let text = String::from_utf8_lossy(&buf);
    assert!(buf.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
}

#[test]
fn a_key_record_edited_in_the_database_is_refused() {
    let h = Harness::start(|c| c);
    let key = h.key(KeyPolicy::new(tenant("acme"), [ApiScope::Read]));
    let ok = h.send(Req::new("acme.localhost", "GET", "/api/credentials").key(&key));
    assert_eq!(ok.status, 200);
    // Someone with the database grants the key `reveal` and moves it to globex.
    let db = rusqlite::Connection::open(h.dir.path().join("gateway.db")).unwrap();
    let body: String = db
        .query_row(
            "SELECT body FROM api_keys WHERE id = ?1",
            [&key[4..16]],
            |r| r.get(0),
        )
        .unwrap();
    let edited = body.replace(r#"["read"]"#, r#"["read","reveal"]"#);
    assert_ne!(edited, body);
    db.execute(
        "UPDATE api_keys SET body = ?2 WHERE id = ?1",
        rusqlite::params![&key[4..16], edited],
    )
    .unwrap();
    let r = h.send(
        Req::new(
            "acme.localhost",
            "POST",
            &format!("/api/credentials/{}/reveal", h.stripe),
        )
        .key(&key)
        .body(b"{}"),
    );
    assert_eq!((r.status, r.code().as_str()), (500, "integrity"));
    assert!(matches!(
        h.keys.get(&key[4..16]),
        Err(credvault_gateway::KeyError::Integrity { .. })
    ));
    // Un-revoking by clearing the column is refused the same way.
    let other = h.key(KeyPolicy::new(tenant("acme"), [ApiScope::Read]));
    h.keys.revoke(&other[4..16], now_ms()).unwrap();
    db.execute(
        "UPDATE api_keys SET revoked_at = NULL WHERE id = ?1",
        [&other[4..16]],
    )
    .unwrap();
    let r = h.send(Req::new("acme.localhost", "GET", "/api/credentials").key(&other));
    assert_eq!((r.status, r.code().as_str()), (500, "integrity"));
}

#[test]
fn credentials_are_created_updated_tested_and_deleted_within_the_key_s_reach() {
    let h = Harness::start(|c| c);
    let writer = h.key(
        KeyPolicy::new(
            tenant("acme"),
            [
                ApiScope::Read,
                ApiScope::Reveal,
                ApiScope::Write,
                ApiScope::Test,
                ApiScope::Admin,
            ],
        )
        .credentials(["bot-*"]),
    );
    let reader = h.key(KeyPolicy::new(tenant("acme"), [ApiScope::Read]));
    let new_body = br#"{"type":"website_login","name":"bot-one","environment":"staging","tags":["ci"],
        "fields":{"login_url":"https://bot.example/login","username":"bot","password":"first secret value"}}"#;

    // Scope and reach first.
    let r = h.send(
        Req::new("acme.localhost", "POST", "/api/credentials")
            .key(&reader)
            .body(new_body),
    );
    assert_eq!((r.status, r.code().as_str()), (403, "insufficient_scope"));
    let outside = br#"{"type":"website_login","name":"prod-db","fields":{"login_url":"https://x.example","username":"u","password":"p"}}"#;
    let r = h.send(
        Req::new("acme.localhost", "POST", "/api/credentials")
            .key(&writer)
            .body(outside),
    );
    assert_eq!((r.status, r.code().as_str()), (403, "outside_key_scope"));

    // Validation errors name the field, never the value.
    let invalid = br#"{"type":"website_login","name":"bot-bad","fields":{"login_url":"not a url value 123","username":"u","password":"p"}}"#;
    let r = h.send(
        Req::new("acme.localhost", "POST", "/api/credentials")
            .key(&writer)
            .body(invalid),
    );
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let text = String::from_utf8_lossy(&r.body);
    assert!(
        text.contains("login_url") && !text.contains("not a url value 123"),
        "{text}"
    );

    let r = h.send(
        Req::new("acme.localhost", "POST", "/api/credentials")
            .key(&writer)
            .body(new_body),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let made = r.json();
    assert_eq!(made["environment"], "staging");
    assert_eq!(made["fields"]["password"], credvault_store::SECRET_MARKER);
    assert!(!String::from_utf8_lossy(&r.body).contains("first secret value"));
    let id = made["id"].as_str().unwrap().to_owned();
    let path = format!("/api/credentials/{id}");

    // A stale version is a conflict; the current one updates.
    let r = h.send(
        Req::new("acme.localhost", "PUT", &path)
            .key(&writer)
            .body(br#"{"fields":{"password":"second secret value"},"version":7}"#),
    );
    assert_eq!((r.status, r.code().as_str()), (409, "conflict"));
    let r = h.send(Req::new("acme.localhost", "PUT", &path).key(&writer).body(
        br#"{"fields":{"password":"second secret value"},"version":1,"description":"rotated"}"#,
    ));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["version"], 2);
    assert_eq!(r.json()["description"], "rotated");
    let r = h.send(
        Req::new("acme.localhost", "POST", &format!("{path}/reveal"))
            .key(&writer)
            .body(br#"{"fields":["password"]}"#),
    );
    assert_eq!(r.json()["fields"]["password"], "second secret value");
    // Renaming out of the key's reach is refused.
    let r = h.send(
        Req::new("acme.localhost", "PUT", &path)
            .key(&writer)
            .body(br#"{"name":"prod-db"}"#),
    );
    assert_eq!((r.status, r.code().as_str()), (403, "outside_key_scope"));

    // A type without a test says so; one with a test answers with the tester's verdict: this
    // one's service is on loopback, which the outbound network policy refuses, so the verdict
    // is an error and nothing was sent.
    let r = h.send(Req::new("acme.localhost", "POST", &format!("{path}/test")).key(&writer));
    assert_eq!((r.status, r.code().as_str()), (400, "unsupported"));
    let api = br#"{"type":"openai_api_key","name":"bot-openai","fields":{"api_key":"sk-test-0123456789abcdef","base_url":"http://127.0.0.1:9/v1"}}"#;
    let r = h.send(
        Req::new("acme.localhost", "POST", "/api/credentials")
            .key(&writer)
            .body(api),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let api_id = r.json()["id"].as_str().unwrap().to_owned();
    let r = h.send(
        Req::new(
            "acme.localhost",
            "POST",
            &format!("/api/credentials/{api_id}/test"),
        )
        .key(&writer),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json()["status"],
        "error",
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert!(!String::from_utf8_lossy(&r.body).contains("sk-test"));

    // Its audit trail, newest last, without values.
    let r = h.send(Req::new("acme.localhost", "GET", &format!("{path}/audit-logs")).key(&writer));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let actions: Vec<String> = r.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    for want in ["created", "updated", "accessed"] {
        assert!(
            actions.iter().any(|a| a == want),
            "{want} not in {actions:?}"
        );
    }
    assert!(!String::from_utf8_lossy(&r.body).contains("secret value"));
    let r = h.send(Req::new("acme.localhost", "GET", &format!("{path}/audit-logs")).key(&reader));
    assert_eq!((r.status, r.code().as_str()), (403, "insufficient_scope"));

    let r = h.send(Req::new("acme.localhost", "DELETE", &format!("{path}?version=1")).key(&writer));
    assert_eq!((r.status, r.code().as_str()), (409, "conflict"));
    let r = h.send(Req::new("acme.localhost", "DELETE", &path).key(&writer));
    assert_eq!(r.status, 204);
    let r = h.send(Req::new("acme.localhost", "GET", &path).key(&writer));
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
}

#[test]
fn the_openapi_document_is_the_committed_one_and_every_operation_in_it_is_served() {
    let committed = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json"),
    )
    .unwrap();
    assert_eq!(
        credvault_gateway::OPENAPI,
        committed,
        "docs/openapi.json is the served one"
    );
    let h = Harness::start(|c| c);
    let served = h.send(Req::new("acme.localhost", "GET", "/openapi.json"));
    assert_eq!(served.status, 200);
    let doc = served.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let key = h.key(KeyPolicy::new(tenant("acme"), ApiScope::ALL));
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "delete"] {
            let Some(op) = item.get(method) else { continue };
            operations += 1;
            let concrete = path
                .replace("{id}", h.github.as_str())
                .replace("types/{id}", "types/website_login");
            let concrete = concrete
                .replace(
                    &format!("types/{}", h.github.as_str()),
                    "types/website_login",
                )
                .replace("{credential}", "github-prod")
                .replace("{path}", "x/y");
            let m = method.to_ascii_uppercase();
            let r = h.send(Req::new("acme.localhost", &m, &concrete).key(&key).body(
                if m == "PUT" {
                    br#"{"description":"x"}"#
                } else {
                    b"{}"
                },
            ));
            let documented: Vec<String> = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            assert!(
                documented.contains(&r.status.to_string()),
                "{m} {path}: {} not documented ({documented:?}): {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
            if op.get("security").is_none() {
                // Audited: the record names the documented route.
                // (OpenAPI has no rest-of-path parameter: `{path}` is the router's `{*path}`.)
                assert_eq!(
                    details(&h.request_record(&r.request_id())).1,
                    path.replace("{path}", "{*path}"),
                    "{m} {path}"
                );
            }
        }
    }
    assert_eq!(operations, 31);
    // A request refused before routing is recorded under the route it asked for.
    let r = h.send(Req::new("acme.localhost", "GET", "/api/credentials"));
    assert_eq!(r.status, 401);
    assert_eq!(
        details(&h.request_record(&r.request_id())).1,
        "/api/credentials"
    );
}

#[test]
fn metrics_count_requests_refusals_and_latency_without_naming_keys_or_tenants() {
    let h = Harness::start(|c| c);
    let key = h.key(
        KeyPolicy::new(tenant("acme"), all_scopes()).rate_limit(RateLimit {
            count: 1,
            per_seconds: 60,
        }),
    );
    for _ in 0..3 {
        h.send(Req::new("acme.localhost", "GET", "/api/credentials").key(&key));
    }
    let r = h.send(Req::new("acme.localhost", "GET", "/metrics"));
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).unwrap();
    for needle in [
        r#"credvault_gateway_requests_total{route="/api/credentials",method="GET",status="200"} 1"#,
        r#"credvault_gateway_requests_total{route="/api/credentials",method="GET",status="429"} 2"#,
        r#"credvault_gateway_rate_limited_total{limit="key"} 2"#,
        r#"credvault_gateway_request_duration_seconds_count{route="/api/credentials"} 3"#,
        "credvault_gateway_audit_failures_total 0",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    assert!(
        !text.contains(&key[4..16]) && !text.contains("acme"),
        "{text}"
    );
}

#[test]
fn a_client_sealed_credential_is_verified_and_stored_as_sent() {
    use base64::Engine as _;
    let h = Harness::start(|c| c);
    let key = h.key(KeyPolicy::new(
        tenant("acme"),
        [ApiScope::Write, ApiScope::Reveal, ApiScope::Read],
    ));
    let r = h.send(Req::new("acme.localhost", "POST", "/api/credentials/data-key").key(&key));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v = r.json();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v["key"].as_str().unwrap())
        .unwrap();
    let key_id = credvault_store::KeyId::from_hex(v["key_id"].as_str().unwrap()).unwrap();
    let data_key = credvault_store::DataKey::from_slice(key_id, &bytes).unwrap();
    let ty = h.vault.store().credential_type("website_login").unwrap();
    let sealed = credvault_store::SealedCredential::seal(
        &data_key,
        &tenant("acme"),
        &ty,
        credvault_store::NewCredential::new(
            "website_login",
            "sealed-login",
            serde_json::json!({
                "login_url": "https://sealed.example/login",
                "username": "client",
                "password": "sealed on the client",
            }),
        ),
    )
    .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = |envelope: &[u8]| {
        serde_json::json!({
            "id": sealed.id.as_str(),
            "type": sealed.type_name,
            "name": sealed.name,
            "environment": sealed.environment,
            "public_fields": sealed.public_fields,
            "envelope": b64.encode(envelope),
        })
        .to_string()
    };
    // One flipped byte: refused, nothing stored.
    let mut bad = sealed.envelope.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let r = h.send(
        Req::new("acme.localhost", "POST", "/api/credentials/sealed")
            .key(&key)
            .body(body(&bad).as_bytes()),
    );
    assert_eq!((r.status, r.code().as_str()), (400, "sealed_rejected"));
    let r = h.send(
        Req::new("acme.localhost", "POST", "/api/credentials/sealed")
            .key(&key)
            .body(body(&sealed.envelope).as_bytes()),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = h.send(
        Req::new(
            "acme.localhost",
            "POST",
            &format!("/api/credentials/{}/reveal", sealed.id),
        )
        .key(&key)
        .body(br#"{"fields":["password"]}"#),
    );
    assert_eq!(r.json()["fields"]["password"], "sealed on the client");
}
