//! A real browser: Debian's headless `chromium` through `chromedriver` (the `fantoccini`
//! WebDriver client) logs into a local test site that sets a session cookie and local storage.
//! The state is saved through `with_session`; a second run, in a fresh browser, restores it and
//! is logged in without calling the login callback; after the idle time (the store's clock
//! moved on) the next run logs in again. `.ci/run` installs chromium and chromium-driver;
//! without chromedriver this test passes vacuously on a developer machine and fails when `CI`
//! is set.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use credvault_session::{BrowserState, SessionConfig, Sessions};
use credvault_store::{ManualClock, NewCredential, StoreConfig, TenantId, Vault, VaultOptions};
use fantoccini::{Client, ClientBuilder, Locator};

const PASSWORD: &str = "site password 41f9";

/// The test site: `/login` (a form), `POST /login` (sets `sid` and redirects), `/account`
/// (welcome with a valid `sid`, else back to `/login`; its script writes local storage).
struct Site {
    port: u16,
    logins: Arc<AtomicUsize>,
}

fn respond(mut s: &TcpStream, status: &str, headers: &[(&str, String)], body: &str) {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    let _ = s.write_all(out.as_bytes());
}

fn site() -> Site {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let logins = Arc::new(AtomicUsize::new(0));
    let sessions: Arc<Mutex<Vec<String>>> = Arc::default();
    let counter = logins.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(stream) = conn else { continue };
            let mut r = BufReader::new(&stream);
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (mut cookie, mut len) = (String::new(), 0usize);
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap_or(("", ""));
                match k.to_ascii_lowercase().as_str() {
                    "cookie" => cookie = v.trim().to_owned(),
                    "content-length" => len = v.trim().parse().unwrap_or(0),
                    _ => {}
                }
            }
            let mut body = vec![0u8; len];
            let _ = r.read_exact(&mut body);
            let body = String::from_utf8_lossy(&body).into_owned();
            let sid = cookie
                .split(';')
                .filter_map(|c| c.trim().strip_prefix("sid="))
                .next()
                .unwrap_or("")
                .to_owned();
            let valid = !sid.is_empty() && sessions.lock().unwrap().contains(&sid);
            match (method, path) {
                ("GET", "/login") => respond(
                    &stream,
                    "200 OK",
                    &[("Content-Type", "text/html".into())],
                    "<html><body><form method=post action=/login>\
                     <input id=user name=user><input id=pass name=pass type=password>\
                     <button id=go type=submit>Sign in</button></form></body></html>",
                ),
                ("POST", "/login") => {
                    let ok = body.contains("user=robot") && body.contains("pass=site+password+41f9");
                    if ok {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let sid = format!("s{}", counter.load(Ordering::SeqCst) * 7919);
                        sessions.lock().unwrap().push(sid.clone());
                        respond(
                            &stream,
                            "303 See Other",
                            &[
                                ("Location", "/account".into()),
                                ("Set-Cookie", format!("sid={sid}; Path=/; HttpOnly; SameSite=Lax")),
                            ],
                            "",
                        );
                    } else {
                        respond(&stream, "303 See Other", &[("Location", "/login".into())], "");
                    }
                }
                ("GET", "/account") if valid => respond(
                    &stream,
                    "200 OK",
                    &[("Content-Type", "text/html".into())],
                    "<html><body><h1 id=welcome>Welcome, robot</h1>\
                     <script>if (!localStorage.getItem('theme')) localStorage.setItem('theme', 'dark');</script>\
                     </body></html>",
                ),
                ("GET", "/account") => {
                    respond(&stream, "303 See Other", &[("Location", "/login".into())], "")
                }
                _ => respond(&stream, "404 Not Found", &[], ""),
            }
        }
    });
    Site { port, logins }
}

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
    let port = TcpListener::bind("127.0.0.1:0")
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
        serde_json::json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage"]}),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", d.port))
        .await
        .expect("a chromium session")
}

/// The browser's state in Playwright's storageState shape: its cookies, and the origin's local
/// storage.
async fn storage_state(c: &Client, origin: &str) -> String {
    let cookies: Vec<serde_json::Value> = c
        .get_all_cookies()
        .await
        .unwrap()
        .iter()
        .map(|k| {
            let mut v = serde_json::json!({"name": k.name(), "value": k.value(),
                "domain": k.domain().unwrap_or(""), "path": k.path().unwrap_or("/"),
                "expires": -1, "httpOnly": k.http_only().unwrap_or(false),
                "secure": k.secure().unwrap_or(false)});
            if let Some(s) = k.same_site() {
                v["sameSite"] = serde_json::Value::String(s.to_string());
            }
            v
        })
        .collect();
    let local = c
        .execute(
            "return Object.keys(localStorage).map(k => ({name: k, value: localStorage.getItem(k)}));",
            vec![],
        )
        .await
        .unwrap();
    serde_json::json!({"cookies": cookies, "origins": [{"origin": origin, "localStorage": local}]})
        .to_string()
}

/// Puts a saved state into a fresh browser: cookies (set on their origin's page), local storage.
async fn restore(c: &Client, origin: &str, state: &BrowserState) {
    let doc: serde_json::Value = serde_json::from_str(state.expose_json()).unwrap();
    // A page of the origin (cookies and local storage are set for the current document).
    c.goto(&format!("{origin}/login")).await.unwrap();
    for k in doc["cookies"].as_array().unwrap() {
        let mut cookie = fantoccini::cookies::Cookie::new(
            k["name"].as_str().unwrap().to_owned(),
            k["value"].as_str().unwrap().to_owned(),
        );
        cookie.set_domain(k["domain"].as_str().unwrap().to_owned());
        cookie.set_path(k["path"].as_str().unwrap().to_owned());
        cookie.set_http_only(k["httpOnly"].as_bool());
        cookie.set_secure(k["secure"].as_bool());
        // WebDriver sends "None" when no SameSite is set, which a browser refuses without
        // Secure: the saved attribute goes back as saved (Lax when absent, as browsers default).
        cookie.set_same_site(match k["sameSite"].as_str() {
            Some("Strict") => cookie::SameSite::Strict,
            Some("None") => cookie::SameSite::None,
            _ => cookie::SameSite::Lax,
        });
        c.add_cookie(cookie).await.unwrap();
    }
    for o in doc["origins"].as_array().unwrap() {
        if o["origin"] == origin {
            c.execute(
                "for (const i of arguments[0]) localStorage.setItem(i.name, i.value);",
                vec![o["localStorage"].clone()],
            )
            .await
            .unwrap();
        }
    }
}

#[test]
fn chromium_logs_in_once_and_the_next_run_restores_the_session() {
    let Some(d) = driver() else {
        eprintln!("skipped: chromedriver not found");
        return;
    };
    let site = site();
    let origin = format!("http://127.0.0.1:{}", site.port);
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let vault = Vault::open_or_init(
        dir.path(),
        VaultOptions::default().store(StoreConfig::default().clock(clock.clone())),
    )
    .unwrap();
    let store = vault.store().clone();
    let acme = TenantId::new("acme").unwrap();
    store.create_tenant(&acme, "Acme", "admin").unwrap();
    let scope = store.tenant(&acme, "robot").unwrap();
    let id = scope
        .create(NewCredential::new(
            "website_login",
            "test-site",
            serde_json::json!({"login_url": format!("{origin}/login"), "username": "robot",
                "password": PASSWORD}),
        ))
        .unwrap()
        .id;
    let sessions = Sessions::open_in(dir.path(), store.clone()).unwrap();
    sessions
        .configure(
            &scope,
            &id,
            &SessionConfig::default().idle(Some(Duration::from_secs(3600))),
        )
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // One automation run: restore or log in, then use the account.
    let run = |label: &str| -> bool {
        let c = rt.block_on(browser(&d));
        let out = sessions
            .with_session(&scope, &id, "default", |ctx| {
                let f = ctx.reveal(&["login_url", "username", "password"])?;
                let state = rt.block_on(async {
                    c.goto(f.expose_secret("login_url").unwrap()).await.unwrap();
                    c.find(Locator::Id("user"))
                        .await
                        .unwrap()
                        .send_keys(f.expose_secret("username").unwrap())
                        .await
                        .unwrap();
                    c.find(Locator::Id("pass"))
                        .await
                        .unwrap()
                        .send_keys(f.expose_secret("password").unwrap())
                        .await
                        .unwrap();
                    c.find(Locator::Id("go"))
                        .await
                        .unwrap()
                        .click()
                        .await
                        .unwrap();
                    c.wait().for_element(Locator::Id("welcome")).await.unwrap();
                    storage_state(&c, &origin).await
                });
                Ok(BrowserState::parse(&state)?)
            })
            .unwrap();
        let logged_in = out.logged_in();
        rt.block_on(async {
            if !logged_in {
                restore(&c, &origin, out.state()).await;
            }
            c.goto(&format!("{origin}/account")).await.unwrap();
            let h = c.find(Locator::Id("welcome")).await;
            assert!(h.is_ok(), "{label}: not logged in at /account");
            let theme = c
                .execute("return localStorage.getItem('theme');", vec![])
                .await
                .unwrap();
            assert_eq!(theme, "dark", "{label}: local storage");
            c.close().await.unwrap();
        });
        logged_in
    };

    assert!(run("first run"), "the first run logs in");
    assert_eq!(site.logins.load(Ordering::SeqCst), 1);
    let saved = sessions.list(&scope).unwrap();
    assert_eq!(saved.len(), 1);
    assert!(
        !run("second run"),
        "the second run restores the saved state"
    );
    assert_eq!(site.logins.load(Ordering::SeqCst), 1, "no second login");
    // An hour without use: the state expired, the next run logs in again.
    clock.advance(3_600_000);
    assert!(
        run("after the idle time"),
        "an expired state means a new login"
    );
    assert_eq!(site.logins.load(Ordering::SeqCst), 2);
}
