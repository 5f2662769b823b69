//! The Vault-compatible API: its shapes and statuses over real TLS, and HashiCorp's Python
//! client `hvac` run against it (`.ci/run` installs it in a venv and sets
//! `CREDVAULT_TEST_PYTHON`; under `CI` its absence fails the test).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use credvault_gateway::{ApiScope, KeyPolicy};
use credvault_store::audit::{Action, Query};

fn vault_harness() -> Harness {
    Harness::start(|c| c.host("127.0.0.1", tenant("acme")).unwrap())
}

fn token(h: &Harness) -> String {
    h.key(
        KeyPolicy::new(
            tenant("acme"),
            [
                ApiScope::Read,
                ApiScope::Reveal,
                ApiScope::Write,
                ApiScope::Totp,
            ],
        )
        .name("vault-client"),
    )
}

#[test]
fn kv_v2_reads_writes_lists_and_refuses_as_vault_does() {
    let h = vault_harness();
    let t = token(&h);
    let req = |m, p| Req::new("acme.localhost", m, p).header("X-Vault-Token", &t);

    let r = h.send(Req::new("acme.localhost", "GET", "/v1/sys/seal-status"));
    assert_eq!((r.status, r.json()["sealed"].as_bool()), (200, Some(false)));
    let r = h.send(Req::new("acme.localhost", "GET", "/v1/sys/health"));
    assert_eq!(r.json()["initialized"], true);

    // A bad token is 403 with Vault's error body.
    let r = h.send(
        Req::new("acme.localhost", "GET", "/v1/secret/data/app/db")
            .header("X-Vault-Token", "cvk_nope"),
    );
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["errors"][0], "permission denied");

    let r = h.send(req("GET", "/v1/auth/token/lookup-self"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["data"]["accessor"], t[4..16]);
    assert_eq!(r.json()["data"]["display_name"], "apikey-vault-client");
    assert!(!String::from_utf8_lossy(&r.body).contains(&t[16..]));

    let r = h.send(
        req("POST", "/v1/secret/data/app/db")
            .body(br#"{"data":{"user":"svc","password":"kv secret one"},"options":{"cas":0}}"#),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["data"]["version"], 1);
    // cas 0 means "only if absent".
    let r =
        h.send(req("POST", "/v1/secret/data/app/db").body(br#"{"data":{},"options":{"cas":0}}"#));
    assert_eq!(r.status, 400);
    assert!(r.json()["errors"][0]
        .as_str()
        .unwrap()
        .contains("check-and-set"));
    let r = h.send(
        req("PUT", "/v1/secret/data/app/db")
            .body(br#"{"data":{"user":"svc","password":"kv secret two"},"options":{"cas":1}}"#),
    );
    assert_eq!(r.json()["data"]["version"], 2);

    let r = h.send(req("GET", "/v1/secret/data/app/db"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v = r.json();
    assert_eq!(v["data"]["data"]["password"], "kv secret two");
    assert_eq!(v["data"]["metadata"]["version"], 2);
    // Older versions are kept and read by number; one that never was is 404.
    let r = h.send(req("GET", "/v1/secret/data/app/db?version=1"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["data"]["data"]["password"], "kv secret one");
    assert_eq!(r.json()["data"]["metadata"]["version"], 1);
    assert_eq!(
        h.send(req("GET", "/v1/secret/data/app/db?version=3"))
            .status,
        404
    );
    assert_eq!(
        h.send(req("GET", "/v1/secret/data/app/nothing")).status,
        404
    );

    // The secret is a kv_secret credential, masked like any other.
    let r = h.send(req("GET", "/api/credentials?type=kv_secret").key(&t));
    let creds = r.json()["credentials"].as_array().unwrap().clone();
    assert_eq!(creds.len(), 1);
    assert_eq!(creds[0]["name"], "app/db");
    assert!(!String::from_utf8_lossy(&r.body).contains("kv secret"));

    // LIST and ?list=true.
    h.send(req("POST", "/v1/secret/data/app/api/key").body(br#"{"data":{"k":"v"}}"#));
    let listed = h.send(req("LIST", "/v1/secret/metadata/app"));
    assert_eq!(
        listed.status,
        200,
        "{}",
        String::from_utf8_lossy(&listed.body)
    );
    assert_eq!(
        listed.json()["data"]["keys"],
        serde_json::json!(["api/", "db"])
    );
    let listed = h.send(req("GET", "/v1/secret/metadata/?list=true"));
    assert_eq!(listed.json()["data"]["keys"], serde_json::json!(["app/"]));
    assert_eq!(
        request_route(&h, &listed.request_id()),
        "/v1/secret/metadata/"
    );
    let m = h.send(req("GET", "/v1/secret/metadata/app/db"));
    assert_eq!(m.json()["data"]["current_version"], 2);

    // Paths that are not paths.
    for bad in [
        "/v1/secret/data/a//b",
        "/v1/secret/data/a/../b",
        "/v1/secret/data/%2e%2e",
    ] {
        let r = h.send(req("GET", bad));
        assert!(r.status == 400 || r.status == 404, "{bad}: {}", r.status);
    }

    // Soft delete of the current version: 404 with its deletion time, older ones still read;
    // undelete brings it back.
    assert_eq!(h.send(req("DELETE", "/v1/secret/data/app/db")).status, 204);
    let r = h.send(req("GET", "/v1/secret/data/app/db"));
    assert_eq!(r.status, 404);
    assert!(r.json()["data"]["data"].is_null());
    assert_ne!(r.json()["data"]["metadata"]["deletion_time"], "");
    assert_eq!(
        h.send(req("GET", "/v1/secret/data/app/db?version=1"))
            .status,
        200
    );
    let r = h.send(req("POST", "/v1/secret/undelete/app/db").body(br#"{"versions":[2]}"#));
    assert_eq!(r.status, 204);
    let r = h.send(req("GET", "/v1/secret/data/app/db"));
    assert_eq!(r.json()["data"]["data"]["password"], "kv secret two");
    // Soft delete by version, then destroy: a destroyed version's data is gone for good.
    let r = h.send(req("POST", "/v1/secret/delete/app/db").body(br#"{"versions":[1]}"#));
    assert_eq!(r.status, 204);
    let r = h.send(req("POST", "/v1/secret/destroy/app/db").body(br#"{"versions":[1]}"#));
    assert_eq!(r.status, 204);
    let r = h.send(req("POST", "/v1/secret/undelete/app/db").body(br#"{"versions":[1]}"#));
    assert_eq!(r.status, 204);
    let r = h.send(req("GET", "/v1/secret/data/app/db?version=1"));
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["data"]["metadata"]["destroyed"], true);
    let m = h.send(req("GET", "/v1/secret/metadata/app/db")).json()["data"].clone();
    assert_eq!(m["versions"]["1"]["destroyed"], true);
    assert_eq!(m["versions"]["2"]["destroyed"], false);
    assert_eq!(
        (m["oldest_version"].as_u64(), m["current_version"].as_u64()),
        (Some(1), Some(2))
    );
    // Destroying the current version leaves the secret's metadata; the next write is version 3.
    let r = h.send(req("POST", "/v1/secret/destroy/app/db").body(br#"{"versions":[2]}"#));
    assert_eq!(r.status, 204);
    assert_eq!(h.send(req("GET", "/v1/secret/data/app/db")).status, 404);
    let r = h.send(
        req("POST", "/v1/secret/data/app/db")
            .body(br#"{"data":{"password":"kv secret three"},"options":{"cas":2}}"#),
    );
    assert_eq!(
        r.json()["data"]["version"],
        3,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    // The vault holds no destroyed value: the sealed history does not have it, and nothing
    // masked shows any.
    let acme = h.vault.store().tenant(&tenant("acme"), "t").unwrap();
    let info = acme.find("app/db", "production").unwrap();
    // (Versions 1 and 2 destroyed: no history is left to hold.)
    assert_ne!(
        info.fields.get("history"),
        Some(&serde_json::json!(credvault_store::SECRET_MARKER))
    );
    let all = acme.reveal(&info.id, &[], None).unwrap();
    let sealed = format!("{:?}", all.expose_secret("data"));
    assert!(sealed.contains("kv secret three"), "{sealed}");
    assert!(all.expose_secret("history").is_none());
    // max_versions: the oldest go; cas_required: a write without cas is refused.
    let r =
        h.send(req("POST", "/v1/secret/metadata/app/db").body(
            br#"{"max_versions":2,"cas_required":true,"custom_metadata":{"team":"billing"}}"#,
        ));
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    let r = h.send(req("POST", "/v1/secret/data/app/db").body(br#"{"data":{"password":"four"}}"#));
    assert_eq!(r.status, 400);
    assert!(r.json()["errors"][0].as_str().unwrap().contains("required"));
    let r = h.send(
        req("POST", "/v1/secret/data/app/db")
            .body(br#"{"data":{"password":"kv secret four"},"options":{"cas":3}}"#),
    );
    assert_eq!(r.json()["data"]["version"], 4);
    let m = h.send(req("GET", "/v1/secret/metadata/app/db")).json()["data"].clone();
    assert_eq!(m["oldest_version"], 3);
    assert_eq!(m["max_versions"], 2);
    assert_eq!(m["cas_required"], true);
    assert_eq!(m["custom_metadata"]["team"], "billing");
    assert_eq!(
        m["versions"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["3", "4"]
    );
    assert_eq!(
        h.send(req("GET", "/v1/secret/data/app/db?version=3"))
            .json()["data"]["data"]["password"],
        "kv secret three"
    );
    // Metadata delete removes the secret and every version.
    for p in [
        "/v1/secret/metadata/app/db",
        "/v1/secret/metadata/app/api/key",
    ] {
        assert_eq!(h.send(req("DELETE", p)).status, 204);
    }
    assert_eq!(
        h.send(req("GET", "/v1/secret/data/app/db?version=3"))
            .status,
        404
    );
    assert_eq!(h.send(req("LIST", "/v1/secret/metadata/app")).status, 404);

    // A secret written before versions were kept: its one version is its credential's, and
    // the next write keeps it as an older version.
    let legacy = acme
        .create(credvault_store::NewCredential::new(
            "kv_secret",
            "old/one",
            serde_json::json!({"data": "{\"k\": \"from before\"}"}),
        ))
        .unwrap();
    let r = h.send(req("GET", "/v1/secret/data/old/one"));
    assert_eq!(r.json()["data"]["metadata"]["version"], legacy.version);
    let r = h.send(req("POST", "/v1/secret/data/old/one").body(br#"{"data":{"k":"after"}}"#));
    assert_eq!(r.json()["data"]["version"], legacy.version + 1);
    let r = h.send(req(
        "GET",
        &format!("/v1/secret/data/old/one?version={}", legacy.version),
    ));
    assert_eq!(r.json()["data"]["data"]["k"], "from before");

    // A read-only token cannot write, in Vault's words.
    let ro = h.key(KeyPolicy::new(tenant("acme"), [ApiScope::Read]));
    let r = h.send(
        Req::new("acme.localhost", "POST", "/v1/secret/data/x")
            .header("X-Vault-Token", &ro)
            .body(br#"{"data":{}}"#),
    );
    assert_eq!(r.status, 403);
    assert!(r.json()["errors"][0].as_str().is_some());
}

#[test]
fn the_totp_engine_makes_imports_and_checks_codes_as_vault_does() {
    let h = vault_harness();
    let t = token(&h);
    let vault = |m: &str, p: &str, body: Option<&str>| {
        let mut r = Req::new("acme.localhost", m, p).header("X-Vault-Token", &t);
        if let Some(b) = body {
            r = r.body(b.as_bytes());
        }
        h.send(r)
    };
    // Generated: the URL comes back once; the key is write-only in the store.
    let r = vault(
        "POST",
        "/v1/totp/keys/bot",
        Some(r#"{"generate": true, "issuer": "Acme", "account_name": "bot@acme.example"}"#),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let url = r.json()["data"]["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with("otpauth://totp/Acme:bot@acme.example?secret="),
        "{url}"
    );
    let info = h
        .vault
        .store()
        .tenant(&tenant("acme"), "t")
        .unwrap()
        .find("totp/bot", "production")
        .unwrap();
    assert_eq!(info.type_name, "totp_key");
    assert_eq!(info.fields["totp_secret"], credvault_store::SECRET_MARKER);
    // A code, accepted once, then refused as Vault refuses a used code; a wrong one is invalid.
    let code = vault("GET", "/v1/totp/code/bot", None).json()["data"]["code"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(code.len(), 6);
    let body = format!(r#"{{"code": "{code}"}}"#);
    let r = vault("POST", "/v1/totp/code/bot", Some(&body));
    assert_eq!(
        r.json()["data"]["valid"],
        true,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let r = vault("POST", "/v1/totp/code/bot", Some(&body));
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["errors"][0],
        "code already used; wait until the next time period"
    );
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let r = vault(
        "POST",
        "/v1/totp/code/bot",
        Some(&format!(r#"{{"code": "{wrong}"}}"#)),
    );
    assert_eq!(r.json()["data"]["valid"], false);
    // Imported from a URL: its parameters are the key's; nothing is returned.
    let r = vault(
        "POST",
        "/v1/totp/keys/imported",
        Some(
            r#"{"url": "otpauth://totp/Example:alice?secret=JBSWY3DPEHPK3PXP&issuer=Example&algorithm=SHA256&digits=8&period=60"}"#,
        ),
    );
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    let k = vault("GET", "/v1/totp/keys/imported", None).json()["data"].clone();
    assert_eq!(
        k,
        serde_json::json!({"account_name": "alice", "algorithm": "SHA256", "digits": 8,
                           "issuer": "Example", "period": 60})
    );
    assert_eq!(
        vault("GET", "/v1/totp/code/imported", None).json()["data"]["code"]
            .as_str()
            .unwrap()
            .len(),
        8
    );
    let r = vault("LIST", "/v1/totp/keys", None);
    assert_eq!(
        r.json()["data"]["keys"],
        serde_json::json!(["bot", "imported"])
    );
    // `?list=True` as Python clients send it (Vault reads booleans as Go does).
    let r = vault("GET", "/v1/totp/keys?list=True", None);
    assert_eq!(
        r.json()["data"]["keys"],
        serde_json::json!(["bot", "imported"])
    );
    assert_eq!(vault("DELETE", "/v1/totp/keys/imported", None).status, 204);
    assert_eq!(vault("GET", "/v1/totp/keys/imported", None).status, 404);
    // Refusals: bad input by name, a key without the scope.
    for (body, needle) in [
        (r#"{"generate": true}"#, "issuer and account_name"),
        (r#"{"key": "not base32!"}"#, "key:"),
        (r#"{"key": "JBSWY3DPEHPK3PXP", "digits": 7}"#, "digits"),
        (
            r#"{"url": "otpauth://hotp/x?secret=JBSWY3DPEHPK3PXP&counter=1"}"#,
            "totp",
        ),
    ] {
        let r = vault("POST", "/v1/totp/keys/bad", Some(body));
        assert_eq!(r.status, 400, "{body}");
        let msg = r.json()["errors"][0].as_str().unwrap().to_owned();
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    let reader = h.key(KeyPolicy::new(tenant("acme"), [ApiScope::Read]));
    let r = h.send(
        Req::new("acme.localhost", "GET", "/v1/totp/code/bot").header("X-Vault-Token", &reader),
    );
    assert_eq!(r.status, 403);
}

#[test]
fn the_transit_engine_encrypts_rotates_rewraps_and_refuses_as_vault_does() {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let h = vault_harness();
    let t = token(&h);
    let vault = |m: &str, p: &str, body: Option<String>| {
        let mut r = Req::new("acme.localhost", m, p).header("X-Vault-Token", &t);
        if let Some(b) = &body {
            r = r.body(b.as_bytes());
        }
        let resp = h.send(r);
        (
            resp.status,
            serde_json::from_slice::<serde_json::Value>(&resp.body).unwrap_or_default(),
        )
    };
    let (st, k) = vault("POST", "/v1/transit/keys/orders", Some("{}".into()));
    assert_eq!(st, 200, "{k}");
    assert_eq!(k["data"]["latest_version"], 1);
    let secret = b"card holder: Jane Q. Public";
    let (st, e) = vault(
        "POST",
        "/v1/transit/encrypt/orders",
        Some(format!(r#"{{"plaintext": "{}"}}"#, b64(secret))),
    );
    assert_eq!(st, 200, "{e}");
    let v1 = e["data"]["ciphertext"].as_str().unwrap().to_owned();
    assert!(v1.starts_with("vault:v1:"), "{v1}");
    let decrypt = |ct: &str| {
        vault(
            "POST",
            "/v1/transit/decrypt/orders",
            Some(format!(r#"{{"ciphertext": "{ct}"}}"#)),
        )
    };
    let (st, d) = decrypt(&v1);
    assert_eq!(
        (st, d["data"]["plaintext"].as_str().unwrap()),
        (200, b64(secret).as_str())
    );

    // Tampered, truncated or foreign ciphertexts are refused.
    let mut tampered = v1.clone().into_bytes();
    let at = tampered.len() - 6;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    for bad in [
        String::from_utf8(tampered).unwrap(),
        v1[..v1.len() - 8].to_owned(),
        v1.replacen("vault:v1:", "vault:v9:", 1),
        "not a ciphertext".to_owned(),
    ] {
        assert_eq!(decrypt(&bad).0, 400, "{bad}");
    }

    // Rotate: new ciphertexts are v2, v1 still decrypts, rewrap moves it to v2.
    let (st, r) = vault("POST", "/v1/transit/keys/orders/rotate", None);
    assert_eq!((st, r["data"]["latest_version"].as_u64()), (200, Some(2)));
    let (_, e2) = vault(
        "POST",
        "/v1/transit/encrypt/orders",
        Some(format!(r#"{{"plaintext": "{}"}}"#, b64(b"x"))),
    );
    assert!(e2["data"]["ciphertext"]
        .as_str()
        .unwrap()
        .starts_with("vault:v2:"));
    assert_eq!(decrypt(&v1).0, 200);
    let (_, rw) = vault(
        "POST",
        "/v1/transit/rewrap/orders",
        Some(format!(r#"{{"ciphertext": "{v1}"}}"#)),
    );
    let v2 = rw["data"]["ciphertext"].as_str().unwrap().to_owned();
    assert!(v2.starts_with("vault:v2:"), "{rw}");
    assert_eq!(decrypt(&v2).1["data"]["plaintext"], b64(secret));
    // Old versions retired: v1 no longer decrypts, v2 does.
    let (st, _) = vault(
        "POST",
        "/v1/transit/keys/orders/config",
        Some(r#"{"min_decryption_version": 2}"#.into()),
    );
    assert_eq!(st, 200);
    assert_eq!(decrypt(&v1).0, 400);
    assert_eq!(decrypt(&v2).0, 200);

    // Batches: one result per item, an error in place of a bad one.
    let (st, b) = vault(
        "POST",
        "/v1/transit/encrypt/orders",
        Some(format!(
            r#"{{"batch_input": [{{"plaintext": "{}"}}, {{"plaintext": "%%%"}}]}}"#,
            b64(b"one")
        )),
    );
    assert_eq!(st, 200);
    let results = b["data"]["batch_results"].as_array().unwrap();
    assert!(results[0]["ciphertext"]
        .as_str()
        .unwrap()
        .starts_with("vault:v2:"));
    assert!(results[1]["error"].as_str().unwrap().contains("base64"));

    // Data keys: the plaintext one decrypts to the key given; the wrapped one has none.
    let (_, dk) = vault("POST", "/v1/transit/datakey/plaintext/orders", None);
    let plain = dk["data"]["plaintext"].as_str().unwrap().to_owned();
    let (_, back) = decrypt(dk["data"]["ciphertext"].as_str().unwrap());
    assert_eq!(back["data"]["plaintext"], plain.as_str());
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(&plain)
            .unwrap()
            .len(),
        32
    );
    let (_, wk) = vault("POST", "/v1/transit/datakey/wrapped/orders", None);
    assert!(wk["data"].get("plaintext").is_none() && wk["data"]["ciphertext"].is_string());

    // A derived key needs its context, and only the same context opens.
    vault(
        "POST",
        "/v1/transit/keys/per-user",
        Some(r#"{"derived": true}"#.into()),
    );
    let ctx_a = b64(b"user-a");
    let (st, _) = vault(
        "POST",
        "/v1/transit/encrypt/per-user",
        Some(format!(r#"{{"plaintext": "{}"}}"#, b64(b"x"))),
    );
    assert_eq!(st, 400);
    let (_, e) = vault(
        "POST",
        "/v1/transit/encrypt/per-user",
        Some(format!(
            r#"{{"plaintext": "{}", "context": "{ctx_a}"}}"#,
            b64(b"x")
        )),
    );
    let ct = e["data"]["ciphertext"].as_str().unwrap().to_owned();
    let with = |ctx: &str| {
        vault(
            "POST",
            "/v1/transit/decrypt/per-user",
            Some(format!(r#"{{"ciphertext": "{ct}", "context": "{ctx}"}}"#)),
        )
        .0
    };
    assert_eq!((with(&ctx_a), with(&b64(b"user-b"))), (200, 400));

    // Another tenant's key of the same name does not open this tenant's ciphertexts.
    let g = h.key(KeyPolicy::new(tenant("globex"), [ApiScope::Write, ApiScope::Reveal]).name("g"));
    let gsend = |m: &str, p: &str, b: String| {
        h.send(
            Req::new("globex.localhost", m, p)
                .header("X-Vault-Token", &g)
                .body(b.as_bytes()),
        )
        .status
    };
    assert_eq!(gsend("POST", "/v1/transit/keys/orders", "{}".into()), 200);
    assert_eq!(
        gsend(
            "POST",
            "/v1/transit/decrypt/orders",
            format!(r#"{{"ciphertext": "{v2}"}}"#)
        ),
        400
    );

    // The versions never leave: the credential's field is use-only.
    let store = h.vault.store().tenant(&tenant("acme"), "t").unwrap();
    let info = store.find("transit/orders", "production").unwrap();
    assert!(store.reveal(&info.id, &["keys"], None).is_err());
    let (_, read) = vault("GET", "/v1/transit/keys/orders", None);
    // A key read shows versions with their creation times, never key material.
    let versions = read["data"]["keys"].as_object().unwrap();
    assert_eq!(versions.keys().collect::<Vec<_>>(), ["2"]);
    assert!(versions.values().all(serde_json::Value::is_u64), "{read}");
    assert_eq!(read["data"]["min_decryption_version"], 2);

    // Listing; deletion only once allowed.
    let (_, l) = vault("LIST", "/v1/transit/keys", None);
    assert_eq!(l["data"]["keys"], serde_json::json!(["orders", "per-user"]));
    assert_eq!(vault("DELETE", "/v1/transit/keys/orders", None).0, 400);
    vault(
        "POST",
        "/v1/transit/keys/orders/config",
        Some(r#"{"deletion_allowed": true}"#.into()),
    );
    assert_eq!(vault("DELETE", "/v1/transit/keys/orders", None).0, 204);
    assert_eq!(decrypt(&v2).0, 400);
    // Unsupported key types are refused by name.
    let (st, e) = vault(
        "POST",
        "/v1/transit/keys/rsa",
        Some(r#"{"type": "rsa-2048"}"#.into()),
    );
    assert_eq!(st, 400);
    assert!(e["errors"][0].as_str().unwrap().contains("aes256-gcm96"));
}

fn request_route(h: &Harness, id: &str) -> String {
    match h.request_record(id).details {
        Some(credvault_store::audit::Details::Request { route, .. }) => route,
        other => panic!("{other:?}"),
    }
}

/// The Python interpreter with hvac, or `None` on a machine without it (outside CI).
fn python() -> Option<String> {
    match std::env::var("CREDVAULT_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if std::env::var_os("CI").is_some() => {
            panic!("CREDVAULT_TEST_PYTHON is not set but CI is: .ci/run makes the venv with hvac")
        }
        _ => None,
    }
}

#[test]
fn hashicorp_s_hvac_client_works_against_it() {
    let Some(python) = python() else {
        eprintln!("skipped: CREDVAULT_TEST_PYTHON not set");
        return;
    };
    let h = vault_harness();
    let t = token(&h);
    let ca = h.dir.path().join("ca.pem");
    std::fs::write(&ca, &h.ca.pem).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/hvac_kv.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(format!("https://127.0.0.1:{}", h.addr.port()))
        .arg(&t)
        .arg(&ca)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hvac: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("hvac: ok"));
    // Every hvac request was recorded, and the records name the token's key, never the token.
    let records = h
        .vault
        .audit_events(&Query::new().action(Action::Request))
        .unwrap()
        .events;
    assert!(records.len() >= 10, "{}", records.len());
    assert!(records
        .iter()
        .any(|e| e.event.actor == format!("apikey:{}", &t[4..16])));
}

#[test]
fn concurrent_kv_writes_each_get_their_own_version() {
    let h = vault_harness();
    let t = token(&h);
    let versions: Vec<u64> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let (h, t) = (&h, &t);
                sc.spawn(move || {
                    let body = format!(r#"{{"data":{{"writer":"{i}"}}}}"#);
                    let r = h.send(
                        Req::new("acme.localhost", "POST", "/v1/secret/data/race")
                            .header("X-Vault-Token", t)
                            .body(body.as_bytes()),
                    );
                    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
                    r.json()["data"]["version"].as_u64().unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|j| j.join().unwrap()).collect()
    });
    let mut sorted = versions.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [1, 2, 3, 4, 5, 6], "{versions:?}");
    // Every version was kept, none overwritten by a concurrent writer.
    let m = h.send(
        Req::new("acme.localhost", "GET", "/v1/secret/metadata/race").header("X-Vault-Token", &t),
    );
    assert_eq!(m.json()["data"]["current_version"], 6);
    let mut writers: Vec<String> = (1..=6)
        .map(|v| {
            let r = h.send(
                Req::new(
                    "acme.localhost",
                    "GET",
                    &format!("/v1/secret/data/race?version={v}"),
                )
                .header("X-Vault-Token", &t),
            );
            r.json()["data"]["data"]["writer"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    writers.sort();
    assert_eq!(writers, ["0", "1", "2", "3", "4", "5"]);
}
