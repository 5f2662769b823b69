//! The isolation matrix: every route that needs a key, against a malformed key, an expired
//! one, a revoked one, another tenant's key, and a key of this tenant lacking the route's scope
//! (holding every other one). Each is refused with the API's own shape (Vault's routes answer
//! 403 "permission denied" where the others say 401), and each refusal has exactly one
//! `request` record with its status. The setup page's routes send a browser without a session
//! to the sign-in page, also recorded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use credvault_gateway::{ApiScope, KeyPolicy};
use credvault_store::audit::{Details, Outcome};

const ALL: [ApiScope; 8] = ApiScope::ALL;

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Native,
    Vault,
    Connect,
}

struct Route {
    shape: Shape,
    method: &'static str,
    path: String,
    body: &'static str,
    /// The scope the route needs; `None`: any key of the tenant.
    scope: Option<ApiScope>,
}

fn route(
    shape: Shape,
    method: &'static str,
    path: &str,
    body: &'static str,
    scope: Option<ApiScope>,
) -> Route {
    Route {
        shape,
        method,
        path: path.to_owned(),
        body,
        scope,
    }
}

fn routes(h: &Harness) -> Vec<Route> {
    use ApiScope::*;
    use Shape::*;
    let cred = format!("/api/credentials/{}", h.stripe);
    let vault_id = "a".repeat(26);
    vec![
        route(Native, "GET", "/api/credentials/types", "", Some(Read)),
        route(
            Native,
            "GET",
            "/api/credentials/types/website_login",
            "",
            Some(Read),
        ),
        route(Native, "GET", "/api/credentials", "", Some(Read)),
        route(
            Native,
            "POST",
            "/api/credentials",
            r#"{"type":"http_bearer_token","name":"new-one","fields":{"token":"t-1"}}"#,
            Some(Write),
        ),
        route(
            Native,
            "POST",
            "/api/credentials/data-key",
            "{}",
            Some(Write),
        ),
        route(Native, "POST", "/api/credentials/sealed", "{}", Some(Write)),
        route(Native, "GET", &cred, "", Some(Read)),
        route(Native, "PUT", &cred, r#"{"description":"x"}"#, Some(Write)),
        route(Native, "DELETE", &cred, "", Some(Write)),
        route(
            Native,
            "POST",
            &format!("{cred}/reveal"),
            "{}",
            Some(Reveal),
        ),
        route(Native, "POST", &format!("{cred}/totp"), "{}", Some(Totp)),
        route(Native, "POST", &format!("{cred}/test"), "{}", Some(Test)),
        route(
            Native,
            "GET",
            &format!("{cred}/audit-logs"),
            "",
            Some(Admin),
        ),
        route(
            Native,
            "GET",
            "/proxy/stripe-live/v1/charges",
            "",
            Some(Proxy),
        ),
        route(Native, "GET", "/api/sessions", "", Some(Read)),
        route(Native, "GET", &format!("{cred}/session"), "", Some(Session)),
        route(
            Native,
            "PUT",
            &format!("{cred}/session"),
            r#"{"cookies":[],"origins":[]}"#,
            Some(Session),
        ),
        route(
            Native,
            "DELETE",
            &format!("{cred}/session"),
            "",
            Some(Session),
        ),
        route(
            Native,
            "GET",
            &format!("{cred}/session-config"),
            "",
            Some(Read),
        ),
        route(
            Native,
            "PUT",
            &format!("{cred}/session-config"),
            r#"{"multiple":true,"login_lock":true,"store":{"cookies":true,"local":true,"session":false}}"#,
            Some(Write),
        ),
        route(
            Native,
            "POST",
            &format!("{cred}/leases"),
            r#"{"kind":"run"}"#,
            Some(Session),
        ),
        route(
            Native,
            "POST",
            &format!("{cred}/leases/0123/renew"),
            "{}",
            Some(Session),
        ),
        route(
            Native,
            "DELETE",
            &format!("{cred}/leases/0123"),
            "",
            Some(Session),
        ),
        route(
            Native,
            "GET",
            &format!("{cred}/tfa/address?domain=example.net"),
            "",
            Some(Read),
        ),
        route(
            Native,
            "POST",
            &format!("{cred}/tfa/code"),
            "{}",
            Some(Totp),
        ),
        route(Vault, "GET", "/v1/auth/token/lookup-self", "", None),
        route(Vault, "GET", "/v1/secret/data/app/db", "", Some(Reveal)),
        route(
            Vault,
            "POST",
            "/v1/secret/data/app/db",
            r#"{"data":{"k":"v"}}"#,
            Some(Write),
        ),
        route(Vault, "DELETE", "/v1/secret/data/app/db", "", Some(Write)),
        route(
            Vault,
            "POST",
            "/v1/secret/delete/app/db",
            r#"{"versions":[1]}"#,
            Some(Write),
        ),
        route(
            Vault,
            "POST",
            "/v1/secret/undelete/app/db",
            r#"{"versions":[1]}"#,
            Some(Write),
        ),
        route(
            Vault,
            "POST",
            "/v1/secret/destroy/app/db",
            r#"{"versions":[1]}"#,
            Some(Write),
        ),
        route(Vault, "GET", "/v1/secret/metadata/app/db", "", Some(Read)),
        route(Vault, "LIST", "/v1/secret/metadata/app", "", Some(Read)),
        route(
            Vault,
            "POST",
            "/v1/secret/metadata/app/db",
            r#"{"max_versions":3}"#,
            Some(Write),
        ),
        route(
            Vault,
            "DELETE",
            "/v1/secret/metadata/app/db",
            "",
            Some(Write),
        ),
        route(Vault, "LIST", "/v1/transit/keys", "", Some(Read)),
        route(Vault, "POST", "/v1/transit/keys/k1", "{}", Some(Write)),
        route(Vault, "GET", "/v1/transit/keys/k1", "", Some(Read)),
        route(
            Vault,
            "POST",
            "/v1/transit/keys/k1/config",
            r#"{"deletion_allowed":true}"#,
            Some(Write),
        ),
        route(Vault, "POST", "/v1/transit/keys/k1/rotate", "", Some(Write)),
        route(Vault, "DELETE", "/v1/transit/keys/k1", "", Some(Write)),
        route(
            Vault,
            "POST",
            "/v1/transit/encrypt/k1",
            r#"{"plaintext":"aGk="}"#,
            Some(Reveal),
        ),
        route(
            Vault,
            "POST",
            "/v1/transit/decrypt/k1",
            r#"{"ciphertext":"vault:v1:AAAA"}"#,
            Some(Reveal),
        ),
        route(
            Vault,
            "POST",
            "/v1/transit/rewrap/k1",
            r#"{"ciphertext":"vault:v1:AAAA"}"#,
            Some(Reveal),
        ),
        route(
            Vault,
            "POST",
            "/v1/transit/datakey/plaintext/k1",
            "{}",
            Some(Reveal),
        ),
        route(Vault, "LIST", "/v1/totp/keys", "", Some(Read)),
        route(
            Vault,
            "POST",
            "/v1/totp/keys/t1",
            r#"{"generate":true,"issuer":"A","account_name":"b"}"#,
            Some(Write),
        ),
        route(Vault, "GET", "/v1/totp/keys/t1", "", Some(Read)),
        route(Vault, "DELETE", "/v1/totp/keys/t1", "", Some(Write)),
        route(Vault, "GET", "/v1/totp/code/t1", "", Some(Totp)),
        route(
            Vault,
            "POST",
            "/v1/totp/code/t1",
            r#"{"code":"123456"}"#,
            Some(Totp),
        ),
        route(Connect, "GET", "/v1/vaults", "", Some(Read)),
        route(
            Connect,
            "GET",
            &format!("/v1/vaults/{vault_id}"),
            "",
            Some(Read),
        ),
        route(
            Connect,
            "GET",
            &format!("/v1/vaults/{vault_id}/items"),
            "",
            Some(Read),
        ),
        route(
            Connect,
            "GET",
            &format!("/v1/vaults/{vault_id}/items/{vault_id}"),
            "",
            Some(Reveal),
        ),
    ]
}

fn send(h: &Harness, r: &Route, host: &str, key: &str) -> (u16, String) {
    let mut req = Req::new(host, r.method, &r.path).key(key);
    if r.shape == Shape::Vault {
        req = Req::new(host, r.method, &r.path).header("X-Vault-Token", key);
    }
    if !r.body.is_empty() {
        req = req.body(r.body.as_bytes());
    }
    let resp = h.send(req);
    // Exactly one request record, with the status sent and a refusal's outcome.
    let id = resp.request_id();
    let rec = &h.request_record(&id);
    match &rec.details {
        Some(Details::Request { status, .. }) => {
            assert_eq!(*status, resp.status, "{} {}", r.method, r.path)
        }
        other => panic!("{other:?}"),
    }
    if resp.status >= 400 {
        assert_eq!(rec.outcome, Outcome::Denied, "{} {}", r.method, r.path);
    }
    (
        resp.status,
        String::from_utf8_lossy(&resp.body).into_owned(),
    )
}

#[test]
fn every_route_refuses_bad_expired_revoked_foreign_and_unscoped_keys() {
    let h = Harness::start(|c| c);
    let expired = h.key(KeyPolicy::new(tenant("acme"), ALL).expires_at(now_ms() - 1));
    let revoked = h.key(KeyPolicy::new(tenant("acme"), ALL));
    h.keys.revoke(&revoked[4..16], now_ms()).unwrap();
    let foreign = h.key(KeyPolicy::new(tenant("globex"), ALL));
    let malformed = "cvk_000000000000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut checked = 0;
    for r in routes(&h) {
        let unauth = if r.shape == Shape::Vault { 403 } else { 401 };
        for (what, key, want) in [
            ("malformed", malformed, unauth),
            ("expired", expired.as_str(), unauth),
            ("revoked", revoked.as_str(), unauth),
            ("another tenant's", foreign.as_str(), 403),
        ] {
            let (status, body) = send(&h, &r, "acme.localhost", key);
            assert_eq!(status, want, "{what} key, {} {}: {body}", r.method, r.path);
            assert!(!body.contains(PASSWORD) && !body.contains(TOTP_SEED));
            checked += 1;
        }
        if let Some(needed) = r.scope {
            let others: Vec<ApiScope> = ALL.into_iter().filter(|s| *s != needed).collect();
            let unscoped = h.key(KeyPolicy::new(tenant("acme"), others));
            let (status, body) = send(&h, &r, "acme.localhost", &unscoped);
            assert_eq!(
                status, 403,
                "without {needed}, {} {}: {body}",
                r.method, r.path
            );
            assert!(!body.contains(PASSWORD));
            checked += 1;
        }
    }
    assert!(checked > 200, "{checked}");
    // Nothing was changed by any refused request.
    let acme = h.vault.store().tenant(&tenant("acme"), "t").unwrap();
    assert_eq!(acme.get(&h.stripe).unwrap().version, 1);
    assert!(acme.find("new-one", "production").is_err());
}

#[test]
fn the_setup_pages_send_a_browser_without_a_session_to_sign_in() {
    let h = Harness::start(|c| c);
    let cred = "/ui/credentials/stripe-live";
    for (method, path) in [
        ("GET", "/ui/credentials".to_owned()),
        ("GET", "/ui/credentials/new?type=website_login".to_owned()),
        ("POST", "/ui/credentials/new?type=website_login".to_owned()),
        ("GET", format!("{cred}/edit?env=production")),
        ("POST", format!("{cred}/edit?env=production")),
        ("POST", format!("{cred}/test?env=production")),
        ("GET", format!("{cred}/deactivate?env=production")),
        ("POST", format!("{cred}/active?env=production")),
        ("GET", format!("{cred}/delete?env=production")),
        ("POST", format!("{cred}/delete?env=production")),
        ("POST", format!("{cred}/code?env=production")),
        ("POST", "/ui/code".to_owned()),
        ("POST", "/ui/logout".to_owned()),
    ] {
        for cookie in [None, Some("cv_ui=forged-session-value")] {
            let mut req = Req::new("acme.localhost", method, &path)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(b"csrf=x");
            if let Some(c) = cookie {
                req = req.header("Cookie", c);
            }
            let r = h.send(req);
            assert_eq!(
                (r.status, r.header("location")),
                (303, Some("/ui/login")),
                "{method} {path} ({cookie:?})"
            );
            let rec = h.request_record(&r.request_id());
            assert_eq!(rec.outcome, Outcome::Denied, "{method} {path}");
        }
    }
    // The sign-in page itself needs a served host.
    let r = h.send(Req::new("unmapped.localhost", "GET", "/ui/login"));
    assert_eq!(r.status, 421);
}

/// The value of cookie `name` set by an answer.
fn set_cookie(r: &Resp, name: &str) -> String {
    let v = r
        .header("set-cookie")
        .unwrap_or_else(|| panic!("no cookie {name}"));
    v.split(';')
        .next()
        .and_then(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap()
        .to_owned()
}

/// A form's CSRF token in a page.
fn csrf_of(r: &Resp) -> String {
    let html = String::from_utf8_lossy(&r.body).into_owned();
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .unwrap()
        .to_owned()
}

#[test]
fn an_admin_key_signs_in_and_saves_and_a_read_key_cannot_sign_in() {
    let h = Harness::start(|c| c);
    let sign_in = |key: &str| {
        let page = h.send(Req::new("acme.localhost", "GET", "/ui/login"));
        let login_cookie = format!("cv_ui_login={}", set_cookie(&page, "cv_ui_login"));
        let body = format!("csrf={}&key={key}", csrf_of(&page));
        h.send(
            Req::new("acme.localhost", "POST", "/ui/login")
                .header("Cookie", &login_cookie)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body.as_bytes()),
        )
    };
    let reader = h.key(KeyPolicy::new(tenant("acme"), [ApiScope::Read]));
    assert_eq!(sign_in(&reader).status, 403);
    let admin = h.key(KeyPolicy::new(tenant("acme"), [ApiScope::Admin]));
    let r = sign_in(&admin);
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/ui/credentials"))
    );
    let session = format!("cv_ui={}", set_cookie(&r, "cv_ui"));
    let form = h.send(
        Req::new(
            "acme.localhost",
            "GET",
            "/ui/credentials/new?type=http_bearer_token",
        )
        .header("Cookie", &session),
    );
    assert_eq!(form.status, 200);
    let body = format!(
        "csrf={}&name=made-by-admin&environment=production&f.token=t-998877",
        csrf_of(&form)
    );
    let r = h.send(
        Req::new(
            "acme.localhost",
            "POST",
            "/ui/credentials/new?type=http_bearer_token",
        )
        .header("Cookie", &session)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body.as_bytes()),
    );
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/ui/credentials")),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let acme = h.vault.store().tenant(&tenant("acme"), "t").unwrap();
    let made = acme.find("made-by-admin", "production").unwrap();
    assert_eq!(made.created_by, format!("apikey:{}", &admin[4..16]));
}
