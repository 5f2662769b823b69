//! The 1Password Connect API subset: vaults are environments, items are credentials, secret
//! fields concealed and revealed, authenticator keys as current codes; Connect's own Python
//! SDK (`onepasswordconnectsdk`) runs against it in CI.

#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use common::*;
use credvault_gateway::{ApiScope, KeyPolicy};
use credvault_store::audit::{Action, Details, Query};

fn get(h: &Harness, key: &str, path: &str) -> (u16, serde_json::Value) {
    let r = h.send(Req::new("acme.localhost", "GET", path).key(key));
    let v = serde_json::from_slice(&r.body).unwrap_or_default();
    (r.status, v)
}

#[test]
fn vaults_items_concealed_fields_and_codes_as_connect_serves_them() {
    let h = Harness::start(|c| c);
    let key = h.key(
        KeyPolicy::new(
            tenant("acme"),
            [ApiScope::Read, ApiScope::Reveal, ApiScope::Totp],
        )
        .name("connect-client"),
    );
    let (st, vaults) = get(&h, &key, "/v1/vaults");
    assert_eq!(st, 200, "{vaults}");
    let vaults = vaults.as_array().unwrap();
    assert_eq!(vaults.len(), 1);
    assert_eq!(vaults[0]["name"], "production");
    assert_eq!(vaults[0]["items"], 2);
    let vid = vaults[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(vid.len(), 26);
    assert!(vid
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    let (_, none) = get(&h, &key, "/v1/vaults?filter=name%20eq%20%22staging%22");
    assert_eq!(none, serde_json::json!([]));

    let (st, items) = get(&h, &key, &format!("/v1/vaults/{vid}/items"));
    assert_eq!(st, 200);
    let mut titles: Vec<&str> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["title"].as_str().unwrap())
        .collect();
    titles.sort_unstable();
    assert_eq!(titles, ["github-prod", "stripe-live"]);
    let (_, one) = get(
        &h,
        &key,
        &format!("/v1/vaults/{vid}/items?filter=title%20eq%20%22stripe-live%22"),
    );
    let iid = one[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(iid.len(), 26);

    let (st, item) = get(&h, &key, &format!("/v1/vaults/{vid}/items/{iid}"));
    assert_eq!(st, 200, "{item}");
    let field = |id: &str| {
        item["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == id)
            .unwrap_or_else(|| panic!("no field {id}: {item}"))
            .clone()
    };
    assert_eq!(field("password")["type"], "CONCEALED");
    assert_eq!(field("password")["value"], PASSWORD);
    assert_eq!(field("password")["purpose"], "PASSWORD");
    assert_eq!(field("password")["label"], "password");
    assert_eq!(field("username")["value"], "ops@acme.example");
    assert_eq!(field("login_url")["type"], "URL");
    let otp = field("totp_secret");
    assert_eq!(otp["type"], "OTP");
    assert!(otp.get("value").is_none(), "the key never leaves: {otp}");
    let code = otp["totp"].as_str().unwrap().to_owned();
    // The code is the credential's: the store accepts it.
    let acme = h.vault.store().tenant(&tenant("acme"), "test").unwrap();
    acme.verify_totp(&h.stripe, &code).unwrap();
    assert!(!item.to_string().contains(TOTP_SEED));

    // The read is a reveal, recorded with the service.
    let accessed = h
        .vault
        .audit_events(&Query::new().action(Action::Accessed))
        .unwrap()
        .events;
    assert!(accessed.iter().any(|e| matches!(
        &e.event.details,
        Some(Details::Accessed { service: Some(s), fields }) if s == "connect" && fields.contains(&"password".to_owned())
    )));

    // Without the totp scope the OTP field has no code; without reveal no item is read.
    let no_totp = h.key(KeyPolicy::new(
        tenant("acme"),
        [ApiScope::Read, ApiScope::Reveal],
    ));
    let (_, item2) = get(&h, &no_totp, &format!("/v1/vaults/{vid}/items/{iid}"));
    let otp2 = item2["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "totp_secret")
        .unwrap()
        .clone();
    assert!(
        otp2.get("totp").is_none() && otp2.get("value").is_none(),
        "{otp2}"
    );
    let reader = h.key(KeyPolicy::new(tenant("acme"), [ApiScope::Read]));
    let (st, e) = get(&h, &reader, &format!("/v1/vaults/{vid}/items/{iid}"));
    assert_eq!((st, e["status"].as_u64()), (403, Some(403)));
    // Connect's error shape for a bad token and an unknown vault; no key for the heartbeat.
    let (st, e) = get(&h, "cvk_0000", "/v1/vaults");
    assert_eq!((st, e["status"].as_u64()), (401, Some(401)), "{e}");
    let (st, e) = get(&h, &key, &format!("/v1/vaults/{}/items", "a".repeat(26)));
    assert_eq!((st, e["status"].as_u64()), (404, Some(404)));
    assert!(e["message"].is_string());
    // An item is found by its id alone, and only where the key reaches it: an unknown id, an
    // item outside the key's globs, and an item asked for under another vault are all absent.
    let narrow = h.key(
        KeyPolicy::new(tenant("acme"), [ApiScope::Read, ApiScope::Reveal])
            .credentials(["github-*"]),
    );
    let other_vault = "a".repeat(26);
    for (k, path) in [
        (&key, format!("/v1/vaults/{vid}/items/{}", "a".repeat(26))),
        (&key, format!("/v1/vaults/{vid}/items/not-an-item-id")),
        (&narrow, format!("/v1/vaults/{vid}/items/{iid}")),
        (&key, format!("/v1/vaults/{other_vault}/items/{iid}")),
    ] {
        let (st, e) = get(&h, k, &path);
        assert_eq!((st, e["status"].as_u64()), (404, Some(404)), "{path}: {e}");
        assert!(!e.to_string().contains(PASSWORD), "{e}");
    }
    let hb = h.send(Req::new("acme.localhost", "GET", "/heartbeat"));
    assert_eq!(hb.status, 200);
    // A counter-based (HOTP) key is listed without a code: a read must not spend one.
    let hotp = acme
        .create(credvault_store::NewCredential::new(
            "hotp_key",
            "vpn-token",
            serde_json::json!({"secret": TOTP_SEED, "hotp_counter": 5}),
        ))
        .unwrap()
        .id;
    let (_, items) = get(
        &h,
        &key,
        &format!("/v1/vaults/{vid}/items?filter=title%20eq%20%22vpn-token%22"),
    );
    let hid = items[0]["id"].as_str().unwrap().to_owned();
    let (st, item) = get(&h, &key, &format!("/v1/vaults/{vid}/items/{hid}"));
    assert_eq!(st, 200, "{item}");
    let otp = item["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "secret")
        .unwrap()
        .clone();
    assert_eq!(otp["type"], "OTP");
    assert!(
        otp.get("totp").is_none() && otp.get("value").is_none(),
        "{otp}"
    );
    // The counter is where it was: the next code handed out is counter 5's.
    let next = acme.totp_code(&hotp, None).unwrap();
    assert_eq!(next.step, 5);
    // Another tenant's host shows its own vault only.
    let g = h.key(KeyPolicy::new(tenant("globex"), [ApiScope::Read]));
    let r = h.send(Req::new("globex.localhost", "GET", "/v1/vaults").key(&g));
    let gv: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(gv[0]["items"], 1);
    assert_ne!(gv[0]["id"].as_str().unwrap(), vid);
}

#[test]
fn one_password_s_connect_sdk_works_against_it() {
    let Some(python) = std::env::var("CREDVAULT_TEST_PYTHON").ok() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but CREDVAULT_TEST_PYTHON is not: the Connect SDK test must run"
        );
        eprintln!("skipped: CREDVAULT_TEST_PYTHON not set");
        return;
    };
    // Clients resolve no `*.localhost` name: the address serves the tenant (no SNI is sent
    // for an address).
    let h = Harness::start(|c| c.host("127.0.0.1", tenant("acme")).unwrap());
    let key = h.key(KeyPolicy::new(
        tenant("acme"),
        [ApiScope::Read, ApiScope::Reveal, ApiScope::Totp],
    ));
    let ca = h.dir.path().join("ca.pem");
    std::fs::write(&ca, &h.ca.pem).unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/connect_sdk.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(format!("https://127.0.0.1:{}", h.addr.port()))
        .arg(&key)
        .arg(&ca)
        .arg(PASSWORD)
        .output()
        .unwrap_or_else(|e| panic!("running the Connect SDK script: {e}"));
    assert!(
        out.status.success(),
        "connect sdk: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("connect: ok"));
}
