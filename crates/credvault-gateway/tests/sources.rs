//! External sources: a tenant whose credentials live in another vault (HashiCorp Vault KV v2,
//! 1Password Connect) and are fetched per request, never stored. The other vault here is a
//! second credvault gateway serving its Vault and Connect APIs (themselves checked with
//! HashiCorp's and 1Password's clients in `vault_compat.rs` and `connect_compat.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::sync::Arc;

use common::*;
use credvault_gateway::source::{ConnectSource, VaultKvSource};
use credvault_gateway::{ApiScope, KeyPolicy};
use credvault_store::audit::{Action, Details, Query};
use zeroize::Zeroizing;

const OPENAI_KEY: &str = "sk-proj-Sourced0123456789AbCdEfGhIj";

/// An upstream on loopback that says whether it got the sourced key.
fn echo_upstream() -> u16 {
    credvault_test::https::loopback_http(|head| {
        let right = head.contains(&format!("authorization: Bearer {OPENAI_KEY}\r\n"));
        (if right { "right key" } else { "wrong key" }).to_owned()
    })
}

fn accessed(h: &Harness) -> Vec<credvault_store::AuditEvent> {
    h.vault
        .audit_events(&Query::new().action(Action::Accessed))
        .unwrap()
        .events
        .into_iter()
        .map(|e| e.event)
        .collect()
}

#[test]
fn a_tenant_backed_by_vault_kv_reveals_and_proxies_without_storing_anything() {
    let port = echo_upstream();
    // The other vault: a KV v2 secret naming its credvault type.
    let other = Harness::start(|c| c.host("127.0.0.1", tenant("acme")).unwrap());
    let writer = other.key(KeyPolicy::new(tenant("acme"), [ApiScope::Write]));
    let body = format!(
        r#"{{"data": {{"type": "openai_api_key", "api_key": "{OPENAI_KEY}", "base_url": "http://127.0.0.1:{port}/v1"}}}}"#
    );
    let r = other.send(
        Req::new("127.0.0.1", "POST", "/v1/secret/data/openai-ext")
            .header("X-Vault-Token", &writer)
            .body(body.as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let reader = other.key(KeyPolicy::new(tenant("acme"), [ApiScope::Reveal]).name("gateway-b"));

    let source = VaultKvSource::new(
        &format!("https://127.0.0.1:{}", other.addr.port()),
        "secret",
        Zeroizing::new(reader.clone()),
        vec![other.ca.der.clone()],
    )
    .unwrap();
    let h = Harness::start(|c| {
        c.source(tenant("globex"), Arc::new(source))
            .allow_upstream("127.0.0.1/32".parse().unwrap())
    });
    let key = h.key(KeyPolicy::new(
        tenant("globex"),
        [ApiScope::Reveal, ApiScope::Proxy],
    ));

    // Reveal by the source's name.
    let r = h.send(
        Req::new(
            "globex.localhost",
            "POST",
            "/api/credentials/openai-ext/reveal",
        )
        .key(&key)
        .body(br#"{"fields": ["api_key"]}"#),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["fields"]["api_key"], OPENAI_KEY);
    // The proxy injects it.
    let r = h.send(Req::new("globex.localhost", "GET", "/proxy/openai-ext/models").key(&key));
    assert_eq!(
        (r.status, String::from_utf8_lossy(&r.body).into_owned()),
        (200, "right key".to_owned())
    );

    // Recorded on both sides; stored on neither but the source.
    let here = accessed(&h);
    let sourced: Vec<_> = here
        .iter()
        .filter(|e| e.resource.id.as_deref() == Some("source:vault-kv:openai-ext"))
        .collect();
    assert_eq!(sourced.len(), 2, "one reveal, one proxied request");
    assert!(
        matches!(&sourced[0].details, Some(Details::Accessed { fields, .. }) if fields == &vec!["api_key".to_owned()])
    );
    assert!(
        accessed(&other).len() >= 2,
        "the source recorded its reads too"
    );
    let globex = h.vault.store().tenant(&tenant("globex"), "t").unwrap();
    assert!(
        globex.find("openai-ext", "production").is_err(),
        "nothing is stored"
    );

    // Not in the source: 404; a key glob that does not cover the name: 404 without asking.
    let r = h.send(
        Req::new(
            "globex.localhost",
            "POST",
            "/api/credentials/missing/reveal",
        )
        .key(&key)
        .body(b"{}"),
    );
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    let narrow =
        h.key(KeyPolicy::new(tenant("globex"), [ApiScope::Reveal]).credentials(["other-*"]));
    let before = accessed(&other).len();
    let r = h.send(
        Req::new(
            "globex.localhost",
            "POST",
            "/api/credentials/openai-ext/reveal",
        )
        .key(&narrow)
        .body(b"{}"),
    );
    assert_eq!(r.status, 404);
    assert_eq!(accessed(&other).len(), before, "the source was not asked");
    // A source that refuses the gateway's token.
    drop(h);
    let bad = VaultKvSource::new(
        &format!("https://127.0.0.1:{}", other.addr.port()),
        "secret",
        Zeroizing::new("cvk_not_a_key".into()),
        vec![other.ca.der.clone()],
    )
    .unwrap();
    let h = Harness::start(|c| c.source(tenant("globex"), Arc::new(bad)));
    let key = h.key(KeyPolicy::new(tenant("globex"), [ApiScope::Reveal]));
    let r = h.send(
        Req::new(
            "globex.localhost",
            "POST",
            "/api/credentials/openai-ext/reveal",
        )
        .key(&key)
        .body(b"{}"),
    );
    assert_eq!((r.status, r.code().as_str()), (502, "source_denied"));
}

#[test]
fn a_tenant_backed_by_1password_connect_reveals_a_login_by_title() {
    let other = Harness::start(|c| c.host("127.0.0.1", tenant("acme")).unwrap());
    let token = other.key(KeyPolicy::new(
        tenant("acme"),
        [ApiScope::Read, ApiScope::Reveal],
    ));
    let source = ConnectSource::new(
        &format!("https://127.0.0.1:{}", other.addr.port()),
        "production",
        Zeroizing::new(token),
        vec![other.ca.der.clone()],
    )
    .unwrap();
    let h = Harness::start(|c| c.source(tenant("globex"), Arc::new(source)));
    let key = h.key(KeyPolicy::new(tenant("globex"), [ApiScope::Reveal]));
    let r = h.send(
        Req::new(
            "globex.localhost",
            "POST",
            "/api/credentials/stripe-live/reveal",
        )
        .key(&key)
        .body(br#"{"fields": ["password", "username"]}"#),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["fields"]["password"], PASSWORD);
    assert_eq!(v["fields"]["username"], "ops@acme.example");
    // The type's policy holds for sourced credentials too: an authenticator key never comes out
    // (and the Connect source never hands it over: only its code).
    let r = h.send(
        Req::new(
            "globex.localhost",
            "POST",
            "/api/credentials/stripe-live/reveal",
        )
        .key(&key)
        .body(br#"{"fields": ["totp_secret"]}"#),
    );
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert!(accessed(&h)
        .iter()
        .any(|e| e.resource.id.as_deref() == Some("source:connect:stripe-live")));
}
