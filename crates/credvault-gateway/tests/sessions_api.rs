//! Browser sessions, leases and two-factor codes over the gateway (real TLS on loopback): the
//! same operations as the CLI, each scoped to the key's tenant and credentials, and Twilio's
//! inbound-SMS webhook with a correctly and a wrongly signed post.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use credvault_gateway::{ApiScope, KeyPolicy};

const STATE: &str = r#"{"cookies":[{"name":"sid","value":"cookie-s3cr3t","domain":"dashboard.stripe.example","path":"/","httpOnly":true,"secure":true,"sameSite":"Lax"}],"origins":[]}"#;

fn json(r: &Resp) -> serde_json::Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&r.body)))
}

#[test]
fn a_state_saved_over_the_gateway_loads_for_its_tenant_only() {
    let h = Harness::start(|c| c);
    let robot = h.key(KeyPolicy::new(
        tenant("acme"),
        [ApiScope::Session, ApiScope::Read],
    ));
    let path = format!("/api/credentials/{}/session?profile=work", h.stripe);
    let none = h.send(Req::new("acme.localhost", "GET", &path).key(&robot));
    assert_eq!(none.status, 404);
    assert_eq!(json(&none)["error"]["code"], "no_session");
    let saved = h.send(
        Req::new("acme.localhost", "PUT", &path)
            .key(&robot)
            .body(STATE.as_bytes()),
    );
    assert_eq!(
        saved.status,
        200,
        "{}",
        String::from_utf8_lossy(&saved.body)
    );
    assert_eq!(json(&saved)["version"], 1);
    let loaded = h.send(Req::new("acme.localhost", "GET", &path).key(&robot));
    assert_eq!(loaded.status, 200);
    let want: serde_json::Value = serde_json::from_str(STATE).unwrap();
    assert_eq!(json(&loaded), want);
    assert!(loaded
        .headers
        .iter()
        .any(|(k, v)| k == "cache-control" && v == "no-store"));
    let list = h.send(Req::new("acme.localhost", "GET", "/api/sessions").key(&robot));
    assert_eq!(json(&list)["sessions"][0]["name"], "stripe-live");
    assert!(!String::from_utf8_lossy(&list.body).contains("s3cr3t"));
    // Another tenant's key, on its own host, does not find the credential.
    let globex = h.key(KeyPolicy::new(tenant("globex"), ApiScope::ALL));
    let foreign = h.send(Req::new("globex.localhost", "GET", &path).key(&globex));
    assert_eq!(foreign.status, 404);
    // A key for other credentials of the tenant does not either.
    let narrow =
        h.key(KeyPolicy::new(tenant("acme"), [ApiScope::Session]).credentials(["github-*"]));
    let hidden = h.send(Req::new("acme.localhost", "GET", &path).key(&narrow));
    assert_eq!(hidden.status, 404);
    assert_eq!(json(&hidden)["error"]["code"], "not_found");
    // A malformed state is refused and names the member.
    let bad = h.send(
        Req::new("acme.localhost", "PUT", &path)
            .key(&robot)
            .body(br#"{"cookies":[{"name":"a"}]}"#),
    );
    assert_eq!(bad.status, 400);
    assert!(String::from_utf8_lossy(&bad.body).contains("cookies[0].value"));
    let gone = h.send(Req::new("acme.localhost", "DELETE", &path).key(&robot));
    assert_eq!(json(&gone)["removed"], 1);
    assert_eq!(
        h.send(Req::new("acme.localhost", "GET", &path).key(&robot))
            .status,
        404
    );
}

#[test]
fn leases_over_the_gateway_exclude_during_a_login_and_are_released_by_id() {
    let h = Harness::start(|c| c);
    let robot = h.key(KeyPolicy::new(
        tenant("acme"),
        [ApiScope::Session, ApiScope::Read, ApiScope::Write],
    ));
    let base = format!("/api/credentials/{}", h.stripe);
    let cfg = h.send(
        Req::new("acme.localhost", "PUT", &format!("{base}/session-config"))
            .key(&robot)
            .body(br#"{"multiple":true,"max_concurrent":2,"login_lock":true,"store":{"cookies":true,"local":true,"session":false}}"#),
    );
    assert_eq!(cfg.status, 200, "{}", String::from_utf8_lossy(&cfg.body));
    let got =
        h.send(Req::new("acme.localhost", "GET", &format!("{base}/session-config")).key(&robot));
    assert_eq!(json(&got)["max_concurrent"], 2);
    let login = h.send(
        Req::new("acme.localhost", "POST", &format!("{base}/leases"))
            .key(&robot)
            .body(br#"{"kind":"login","ttl_seconds":30}"#),
    );
    assert_eq!(
        login.status,
        201,
        "{}",
        String::from_utf8_lossy(&login.body)
    );
    let lease = json(&login)["lease"].as_str().unwrap().to_owned();
    let run = h.send(
        Req::new("acme.localhost", "POST", &format!("{base}/leases"))
            .key(&robot)
            .body(br#"{"kind":"run","wait_seconds":0.2}"#),
    );
    assert_eq!(run.status, 409);
    assert_eq!(json(&run)["error"]["code"], "lease_unavailable");
    let renewed = h.send(
        Req::new(
            "acme.localhost",
            "POST",
            &format!("{base}/leases/{lease}/renew"),
        )
        .key(&robot)
        .body(br#"{"ttl_seconds":60}"#),
    );
    assert_eq!(renewed.status, 200);
    // Another credential's path does not reach the lease.
    let wrong = h.send(
        Req::new(
            "acme.localhost",
            "DELETE",
            &format!("/api/credentials/{}/leases/{lease}", h.github),
        )
        .key(&robot),
    );
    assert_eq!(wrong.status, 410);
    let released = h.send(
        Req::new(
            "acme.localhost",
            "DELETE",
            &format!("{base}/leases/{lease}"),
        )
        .key(&robot),
    );
    assert_eq!(released.status, 204);
    let again = h.send(
        Req::new(
            "acme.localhost",
            "DELETE",
            &format!("{base}/leases/{lease}"),
        )
        .key(&robot),
    );
    assert_eq!(again.status, 410);
    let run = h.send(
        Req::new("acme.localhost", "POST", &format!("{base}/leases"))
            .key(&robot)
            .body(br#"{"kind":"run"}"#),
    );
    assert_eq!(run.status, 201);
    // A wait past the gateway's limit is refused before anything happens.
    let long = h.send(
        Req::new("acme.localhost", "POST", &format!("{base}/leases"))
            .key(&robot)
            .body(br#"{"kind":"run","wait_seconds":600}"#),
    );
    assert_eq!(long.status, 400);
}

fn form(params: &[(&str, &str)]) -> String {
    params
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                k,
                v.bytes()
                    .map(|b| if b.is_ascii_alphanumeric() {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    })
                    .collect::<String>()
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[test]
fn a_signed_twilio_post_delivers_its_code_and_a_wrongly_signed_one_does_nothing() {
    let h = Harness::start(|c| c);
    let store = h.vault.store().clone();
    let tfa = credvault_tfa::Tfa::open_in(&h.dir.path().join("vault"), store.clone()).unwrap();
    let scope = store.tenant(&tenant("acme"), "test").unwrap();
    tfa.set_rules(
        &scope,
        &h.stripe,
        &credvault_tfa::Rules::default().phone("+15557654321"),
    )
    .unwrap();
    let robot = h.key(KeyPolicy::new(
        tenant("acme"),
        [ApiScope::Totp, ApiScope::Read],
    ));
    let address = h.send(
        Req::new(
            "acme.localhost",
            "GET",
            &format!(
                "/api/credentials/{}/tfa/address?domain=mail.example.net",
                h.stripe
            ),
        )
        .key(&robot),
    );
    assert!(json(&address)["address"]
        .as_str()
        .unwrap()
        .starts_with("vault+"));
    let params = [
        ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
        ("From", "+18005550199"),
        ("To", "+15557654321"),
        (
            "Body",
            "Stripe: your verification code is 318264. Ref 99120033.",
        ),
        ("NumMedia", "0"),
    ];
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let url = format!("https://acme.localhost:{}/tfa/sms/twilio", h.addr.port());
    let host = format!("acme.localhost:{}", h.addr.port());
    let body = form(&params);
    let wrong = credvault_tfa::twilio_signature(b"another token", &url, &owned);
    let refused = h.send(
        Req::new(&host, "POST", "/tfa/sms/twilio")
            .sni("acme.localhost")
            .header("X-Twilio-Signature", &wrong)
            .body(body.as_bytes()),
    );
    assert_eq!(
        refused.status,
        403,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    let code_path = format!("/api/credentials/{}/tfa/code", h.stripe);
    let none = h.send(
        Req::new("acme.localhost", "POST", &code_path)
            .key(&robot)
            .body(b"{}"),
    );
    assert_eq!(none.status, 404);
    assert_eq!(json(&none)["error"]["code"], "no_code");
    let right = credvault_tfa::twilio_signature(TWILIO_TOKEN.as_bytes(), &url, &owned);
    let taken = h.send(
        Req::new(&host, "POST", "/tfa/sms/twilio")
            .sni("acme.localhost")
            .header("X-Twilio-Signature", &right)
            .body(body.as_bytes()),
    );
    assert_eq!(
        taken.status,
        200,
        "{}",
        String::from_utf8_lossy(&taken.body)
    );
    let rid = taken
        .headers
        .iter()
        .find(|(k, _)| k == "x-request-id")
        .unwrap()
        .1
        .clone();
    assert_eq!(h.request_record(&rid).tenant, "acme");
    // The same post to another tenant's host reaches no number there (and its signature,
    // over another URL, does not verify either).
    let other = h.send(
        Req::new("globex.localhost", "POST", "/tfa/sms/twilio")
            .header("X-Twilio-Signature", &right)
            .body(body.as_bytes()),
    );
    assert_eq!(other.status, 403);
    let code = h.send(
        Req::new("acme.localhost", "POST", &code_path)
            .key(&robot)
            .body(br#"{"timeout_seconds":5}"#),
    );
    assert_eq!(code.status, 200, "{}", String::from_utf8_lossy(&code.body));
    assert_eq!(json(&code)["code"], "318264");
    assert_eq!(json(&code)["channel"], "sms");
    // Handed out once.
    let again = h.send(
        Req::new("acme.localhost", "POST", &code_path)
            .key(&robot)
            .body(b"{}"),
    );
    assert_eq!(again.status, 404);
}
