//! The setup page in a real browser: Debian's `chromium`, driven through `chromedriver`
//! (WebDriver, the `fantoccini` crate), against the real gateway over TLS on loopback.
//! `.ci/run` installs both; without chromedriver these tests pass vacuously on a developer
//! machine and fail when `CI` is set. Screenshots of each page go to
//! `CREDVAULT_UI_SCREENSHOTS` (default `target/ui-screenshots`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use credvault_gateway::{ApiScope, KeyPolicy};
use fantoccini::{Client, ClientBuilder, Locator};

const PORTAL_PASSWORD: &str = "portal password 8c1f";
/// A 12-character key, spaced and in lower case, as a site shows it.
const SHORT_KEY: &str = "jbsw y3dp ehpk";

struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn driver() -> Option<Driver> {
    let bin =
        std::env::var("CREDVAULT_TEST_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = match Command::new(&bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(_) if std::env::var_os("CI").is_none() => return None,
        Err(e) => panic!("{bin}: {e}; CI is set: .ci/run installs chromium-driver"),
    };
    let d = Driver { child, port };
    let until = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(d)
}

async fn browser(d: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                // The test CA is not the system's: the gateway's certificate is accepted here
                // only (the raw client below checks it against the CA).
                "--ignore-certificate-errors", "--window-size=1100,1300",
            ]
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", d.port))
        .await
        .expect("a chromium session")
}

fn shots() -> PathBuf {
    let dir = std::env::var_os("CREDVAULT_UI_SCREENSHOTS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    std::fs::write(shots().join(name), png).unwrap();
}

/// RFC 6238 (SHA-1, 6 digits, 30 s) computed here from the key's base32 text, independently of
/// the totp crate: the codes the page shows must equal these.
fn rfc6238(key: &str, time: u64) -> String {
    let mut bits = 0u64;
    let mut n = 0;
    let mut bytes = Vec::new();
    for c in key.chars().filter(|c| !c.is_whitespace()) {
        let v = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
            .find(c.to_ascii_uppercase())
            .unwrap() as u64;
        bits = (bits << 5) | v;
        n += 5;
        if n >= 8 {
            n -= 8;
            bytes.push((bits >> n) as u8);
        }
    }
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &bytes);
    let mac = ring::hmac::sign(&k, &(time / 30).to_be_bytes());
    let m = mac.as_ref();
    let off = usize::from(m[19] & 0x0f);
    let v = u32::from_be_bytes([m[off] & 0x7f, m[off + 1], m[off + 2], m[off + 3]]);
    format!("{:06}", v % 1_000_000)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Presses "Get code" and reads the code shown, checked against RFC 6238 at the times around
/// the press.
async fn get_code(c: &Client) -> String {
    let before = unix_now();
    c.find(Locator::Css("button.get-code"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let out = c.find(Locator::Id("c-totp_secret")).await.unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let text = out.text().await.unwrap();
        if text.contains("valid for") {
            let code = text.split_whitespace().next().unwrap().to_owned();
            let after = unix_now();
            let expected = [rfc6238(SHORT_KEY, before), rfc6238(SHORT_KEY, after)];
            assert!(
                expected.contains(&code),
                "{code} not in {expected:?} ({text})"
            );
            return code;
        }
        assert!(Instant::now() < until, "no code shown: {text:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every visible input and select has a label that names it, and nothing takes a positive
/// `tabindex` (keyboard order is the document's order).
async fn accessible(c: &Client, page: &str) {
    let problems = c
        .execute(
            r#"const bad = [];
               document.querySelectorAll("input:not([type=hidden]), select, textarea").forEach(e => {
                 const label = e.id && document.querySelector(`label[for="${e.id}"]`);
                 if (!label || label.textContent.trim() === "") bad.push("no label: " + (e.name || e.id));
               });
               document.querySelectorAll("[tabindex]").forEach(e => {
                 if (parseInt(e.getAttribute("tabindex"), 10) > 0) bad.push("tabindex: " + e.outerHTML);
               });
               return bad;"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(problems, serde_json::json!([]), "{page}");
}

/// Pressing Tab from the name field walks the form's controls in the order they are read.
async fn keyboard_order(c: &Client) {
    c.find(Locator::Id("name"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let mut order = Vec::new();
    for _ in 0..9 {
        let el = c.active_element().await.unwrap();
        let id = el.attr("id").await.unwrap().unwrap_or_default();
        let class = el.attr("class").await.unwrap().unwrap_or_default();
        order.push(if id.is_empty() { class } else { id });
        el.send_keys("\u{e004}").await.unwrap();
    }
    assert_eq!(
        order,
        [
            "name",
            "environment",
            "tags",
            "f-login_url",
            "f-username",
            "f-password",
            "f-totp_secret",
            "get-code",
            "f-notes"
        ]
    );
}

/// Waits until the page source contains `needle` (a form post has loaded its answer).
async fn wait_for(c: &Client, needle: &str) -> String {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let src = c.source().await.unwrap();
        if src.contains(needle) {
            return src;
        }
        assert!(Instant::now() < until, "{needle:?} never appeared: {src}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Clicks the element `css` and waits for `needle` in the page that follows.
async fn submit(c: &Client, css: &str, needle: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(c, needle).await
}

/// What a page could leak: its source and every input's live value.
async fn page_text(c: &Client) -> String {
    let values = c
        .execute(
            "return Array.from(document.querySelectorAll('input')).map(e => e.value).join('\\n');",
            vec![],
        )
        .await
        .unwrap();
    format!(
        "{}\n{}",
        c.source().await.unwrap(),
        values.as_str().unwrap_or_default()
    )
}

#[test]
fn a_credential_set_up_in_the_browser_keeps_its_secrets_write_only() {
    let Some(d) = driver() else { return };
    let h = Harness::start(|c| c);
    let key = h.key(
        KeyPolicy::new(
            tenant("acme"),
            [
                ApiScope::Read,
                ApiScope::Reveal,
                ApiScope::Write,
                ApiScope::Totp,
            ],
        )
        .name("setup-page"),
    );
    h.vault
        .store()
        .tenant(&tenant("acme"), "t")
        .unwrap()
        .create(credvault_store::NewCredential::new(
            "aws_access_key",
            "aws-ci",
            serde_json::json!({
                "access_key_id": "AKIAIOSFODNN7EXAMPLE",
                "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            }),
        ))
        .unwrap();
    let acme = h.vault.store().tenant(&tenant("acme"), "t").unwrap();
    for (name, at) in [
        ("old-token", now_ms() - 60_000),
        ("soon-token", now_ms() + 2 * 86_400_000),
    ] {
        acme.create(
            credvault_store::NewCredential::new(
                "http_bearer_token",
                name,
                serde_json::json!({ "token": "t-123456" }),
            )
            .expires_at(at),
        )
        .unwrap();
    }
    let base = format!("https://acme.localhost:{}", h.addr.port());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cookie = rt.block_on(async {
        let c = browser(&d).await;
        // Signed out: any page leads to the sign-in page.
        c.goto(&format!("{base}/ui/credentials")).await.unwrap();
        assert_eq!(c.current_url().await.unwrap().path(), "/ui/login");
        accessible(&c, "login").await;
        shot(&c, "login.png").await;
        c.find(Locator::Id("key"))
            .await
            .unwrap()
            .send_keys(&key)
            .await
            .unwrap();
        let list = submit(&c, "form[action='/ui/login'] button", "Add a credential").await;
        assert_eq!(c.current_url().await.unwrap().path(), "/ui/credentials");
        assert!(
            list.contains("stripe-live") && list.contains("github-prod"),
            "{list}"
        );
        assert!(!list.contains(PASSWORD));
        assert!(
            list.contains("class=\"expired\"") && list.contains("class=\"soon\""),
            "{list}"
        );
        accessible(&c, "list").await;
        shot(&c, "list.png").await;

        // A new website login with a 12-character authenticator key.
        c.goto(&format!("{base}/ui/credentials/new?type=website_login"))
            .await
            .unwrap();
        accessible(&c, "new").await;
        keyboard_order(&c).await;
        // A refused save: the error next to its field, the public values kept, no secret.
        for (id, value) in [
            ("name", "broken"),
            ("f-login_url", "not a url"),
            ("f-username", "bot"),
            ("f-password", PORTAL_PASSWORD),
        ] {
            c.find(Locator::Id(id))
                .await
                .unwrap()
                .send_keys(value)
                .await
                .unwrap();
        }
        let refused = submit(&c, "form.credential button[type=submit]", "was not saved").await;
        assert!(refused.contains("id=\"e-login_url\""), "{refused}");
        let text = page_text(&c).await;
        assert!(!text.contains(PORTAL_PASSWORD), "a secret came back");
        assert_eq!(
            c.find(Locator::Id("f-login_url"))
                .await
                .unwrap()
                .prop("value")
                .await
                .unwrap()
                .as_deref(),
            Some("not a url")
        );
        shot(&c, "refused.png").await;
        c.goto(&format!("{base}/ui/credentials/new?type=website_login"))
            .await
            .unwrap();
        for (id, value) in [
            ("name", "portal"),
            ("f-login_url", "https://portal.example/login"),
            ("f-username", "bot@acme.example"),
            ("f-password", PORTAL_PASSWORD),
            ("f-totp_secret", SHORT_KEY),
        ] {
            c.find(Locator::Id(id))
                .await
                .unwrap()
                .send_keys(value)
                .await
                .unwrap();
        }
        // "Get code" from the key as typed: no reload, the form keeps what was typed.
        get_code(&c).await;
        let kept = c
            .find(Locator::Id("f-password"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap();
        assert_eq!(kept.as_deref(), Some(PORTAL_PASSWORD));
        shot(&c, "new.png").await;
        let list = submit(
            &c,
            "form.credential button[type=submit]",
            "Add a credential",
        )
        .await;
        assert_eq!(c.current_url().await.unwrap().path(), "/ui/credentials");
        assert!(list.contains("/ui/credentials/portal/edit"), "{list}");

        // Editing: no secret anywhere in the page, the saved key still gives codes.
        c.goto(&format!("{base}/ui/credentials/portal/edit?env=production"))
            .await
            .unwrap();
        let text = page_text(&c).await;
        for secret in [PORTAL_PASSWORD, SHORT_KEY, "JBSWY3DPEHPK", "jbswy3dpehpk"] {
            assert!(!text.contains(secret), "{secret} in the edit page");
        }
        accessible(&c, "edit").await;
        get_code(&c).await;
        shot(&c, "edit.png").await;
        // A public field changed; the secrets left empty are kept.
        let user = c.find(Locator::Id("f-username")).await.unwrap();
        user.clear().await.unwrap();
        user.send_keys("ops@acme.example").await.unwrap();
        let saved = submit(&c, "form.credential button[type=submit]", "Saved.").await;
        assert!(saved.contains("ops@acme.example"), "{saved}");
        // A website login has no test: no "Test" button. A type with one shows its result.
        assert!(c.find(Locator::Css("form[action*='/test']")).await.is_err());
        c.goto(&format!("{base}/ui/credentials/aws-ci/edit?env=production"))
            .await
            .unwrap();
        let tested = submit(&c, "form[action*='/test'] button", "Test: ").await;
        assert!(tested.contains("role=\"status\""), "{tested}");
        assert!(!tested.contains("wJalrXUtnFEMI"), "{tested}");
        // Moved to another environment from the form (its secrets sealed again there).
        let env = c.find(Locator::Id("environment")).await.unwrap();
        env.clear().await.unwrap();
        env.send_keys("staging").await.unwrap();
        let moved = submit(&c, "form.credential button[type=submit]", "Saved.").await;
        assert!(moved.contains("value=\"staging\""), "{moved}");
        // Deactivate after a confirmation; activate again.
        c.goto(&format!(
            "{base}/ui/credentials/aws-ci/deactivate?env=staging"
        ))
        .await
        .unwrap();
        accessible(&c, "deactivate").await;
        submit(&c, "button.danger", "Deactivated.").await;
        submit(&c, "form[action*='/active'] button", "Activated.").await;
        // Delete, after a confirmation.
        c.goto(&format!("{base}/ui/credentials/aws-ci/delete?env=staging"))
            .await
            .unwrap();
        accessible(&c, "delete").await;
        let list = submit(&c, "button.danger", "Add a credential").await;
        assert!(!list.contains("aws-ci"), "{list}");
        let session = c.get_named_cookie("cv_ui").await.unwrap();
        assert_eq!(session.http_only(), Some(true));
        assert_eq!(session.secure(), Some(true));
        let value = session.value().to_owned();
        c.close().await.unwrap();
        value
    });

    // Through the API: the secret is the one typed at creation, the public field the new one.
    let acme = h.vault.store().tenant(&tenant("acme"), "t").unwrap();
    let info = acme.find("portal", "production").unwrap();
    assert_eq!(info.fields["username"], "ops@acme.example");
    let path = format!("/api/credentials/{}/reveal", info.id);
    let r = h.send(
        Req::new("acme.localhost", "POST", &path)
            .key(&key)
            .body(br#"{"fields":["password"]}"#),
    );
    assert_eq!(r.json()["fields"]["password"], PORTAL_PASSWORD);
    let code = acme.totp_code(&info.id, None).unwrap();
    let t = u64::try_from(code.expires_at / 1000).unwrap() - 1;
    assert_eq!(code.expose_secret(), rfc6238(SHORT_KEY, t));

    // A form post with the session but the wrong CSRF token, and one without a session.
    let edit = "/ui/credentials/portal/edit?env=production";
    let cookie_header = format!("cv_ui={cookie}");
    let form = |csrf: &str| format!("csrf={csrf}&f.username=mallory%40evil.example");
    let wrong = form("not-the-token");
    let r = h.send(
        Req::new("acme.localhost", "POST", edit)
            .header("Cookie", &cookie_header)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(wrong.as_bytes()),
    );
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    let r = h.send(
        Req::new("acme.localhost", "POST", edit)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(wrong.as_bytes()),
    );
    assert_eq!((r.status, r.header("location")), (303, Some("/ui/login")));
    // The session is bound to its host: globex's host does not take it.
    let r = h.send(
        Req::new("globex.localhost", "GET", "/ui/credentials").header("Cookie", &cookie_header),
    );
    assert_eq!(r.status, 303);
    let info = acme.find("portal", "production").unwrap();
    assert_eq!(info.fields["username"], "ops@acme.example");
    // Sign-out ends the session for good: the old cookie no longer opens a page.
    let page = h.send(
        Req::new("acme.localhost", "GET", "/ui/credentials").header("Cookie", &cookie_header),
    );
    assert_eq!(page.status, 200);
    let html = String::from_utf8_lossy(&page.body).into_owned();
    let token = html
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .unwrap()
        .to_owned();
    let out = format!("csrf={token}");
    let r = h.send(
        Req::new("acme.localhost", "POST", "/ui/logout")
            .header("Cookie", &cookie_header)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(out.as_bytes()),
    );
    assert_eq!((r.status, r.header("location")), (303, Some("/ui/login")));
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    let r = h.send(
        Req::new("acme.localhost", "GET", "/ui/credentials").header("Cookie", &cookie_header),
    );
    assert_eq!((r.status, r.header("location")), (303, Some("/ui/login")));
    // The page's answers carry the policy that keeps script inline out, and no framing.
    let r = h.send(Req::new("acme.localhost", "GET", "/ui/login"));
    let csp = r.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
}
