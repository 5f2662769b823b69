//! The credential-injecting proxy against a real upstream on a loopback port (plain HTTP, and
//! HTTPS with its own CA): what goes up, what comes back, and what is recorded.

#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use common::*;
use credvault_dlp::{Action as DlpAction, Scanner};
use credvault_gateway::{ApiScope, GatewayConfig, KeyPolicy};
use credvault_store::audit::{Action, Details, DlpCount, Query};
use credvault_store::{AuditEvent, CredentialId, NewCredential};

const TOKEN: &str = "tok_9f8e7d6c5b4a39281706f5e4d3c2b1a0";
const OPENAI_KEY: &str = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123";
const HEADER_KEY: &str = "hk-7Yq2Lm9Vx4Rt8Wp3Zs6Nb1Jc5";

/// One request as the upstream read it.
#[derive(Clone, Debug)]
struct Seen {
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A small HTTP/1.1 server on a loopback port that records what it is sent and answers by
/// path; over TLS when given a certificate.
struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    go: mpsc::Sender<()>,
    held_until_go: Arc<AtomicBool>,
}

trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

impl Upstream {
    fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (go, go_rx) = mpsc::channel::<()>();
        let held = Arc::new(AtomicBool::new(false));
        let (seen2, held2) = (Arc::clone(&seen), Arc::clone(&held));
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { continue };
                tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let mut conn: Box<dyn Conn> = match &tls {
                    Some(cfg) => Box::new(rustls::StreamOwned::new(
                        rustls::ServerConnection::new(Arc::clone(cfg)).unwrap(),
                        tcp,
                    )),
                    None => Box::new(tcp),
                };
                let Some(req) = read_request(&mut conn) else {
                    continue;
                };
                seen2.lock().unwrap().push(req.clone());
                let _ = answer(&mut conn, &req, &go_rx, &held2);
            }
        });
        Self {
            addr,
            seen,
            go,
            held_until_go: held,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn base(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}/v1", self.addr.port())
    }
}

fn read_request(c: &mut dyn Conn) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if c.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).ok()?;
    let mut lines = head.split("\r\n");
    let line = lines.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0u8; len];
    c.read_exact(&mut body).ok()?;
    Some(Seen {
        line,
        headers,
        body,
    })
}

fn chunk(c: &mut dyn Conn, data: &[u8]) -> std::io::Result<()> {
    write!(c, "{:x}\r\n", data.len())?;
    c.write_all(data)?;
    c.write_all(b"\r\n")?;
    c.flush()
}

fn answer(
    c: &mut dyn Conn,
    req: &Seen,
    go: &mpsc::Receiver<()>,
    held: &AtomicBool,
) -> std::io::Result<()> {
    let path = req.line.split(' ').nth(1).unwrap_or("");
    let auth = req.header("authorization").unwrap_or("").to_owned();
    if path.starts_with("/v1/echo") {
        // The credential echoed back raw, in base64 and JSON-escaped, and in a header.
        let body = serde_json::json!({
            "auth": auth,
            "b64": base64::engine::general_purpose::STANDARD.encode(&auth),
            "api_key": req.header("api-key"),
            "note": "card 4111 1111 1111 1111",
        })
        .to_string();
        write!(
            c,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Echo-Auth: {auth}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
    } else if path.starts_with("/v1/chat/completions") {
        c.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")?;
        // The key split across two chunks, a card number, then (after the client has seen
        // the first event) the usage event.
        let (a, b) = OPENAI_KEY.split_at(14);
        chunk(c, format!("data: {{\"model\":\"gpt-test\",\"choices\":[{{\"delta\":{{\"content\":\"your key is {a}").as_bytes())?;
        chunk(
            c,
            format!("{b} and card 4111 1111 1111 1111\"}}}}]}}\n\n").as_bytes(),
        )?;
        held.store(
            go.recv_timeout(Duration::from_secs(15)).is_ok(),
            Ordering::SeqCst,
        );
        chunk(c, b"data: {\"model\":\"gpt-test\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":22,\"total_tokens\":33}}\n\n")?;
        chunk(c, b"data: [DONE]\n\n")?;
        c.write_all(b"0\r\n\r\n")?;
        c.flush()?;
    } else if path.starts_with("/v1/gzip") {
        c.write_all(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    } else if path.starts_with("/v1/ssn") {
        let body = "the applicant's ssn is 219-09-9999";
        write!(
            c,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
    } else {
        c.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")?;
    }
    c.flush()
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

/// The `proxied` record of a request.
fn proxied(h: &Harness, request_id: &str) -> AuditEvent {
    let found: Vec<_> = events(h, Action::Proxied)
        .into_iter()
        .filter(|e| e.request_id.as_deref() == Some(request_id))
        .collect();
    assert_eq!(found.len(), 1, "one proxied record for {request_id}");
    found.into_iter().next().unwrap()
}

fn proxy_key(h: &Harness, scopes: &[ApiScope]) -> String {
    h.key(KeyPolicy::new(tenant("acme"), scopes.iter().copied()).name("agent"))
}

fn create(h: &Harness, ty: &str, name: &str, fields: serde_json::Value) -> CredentialId {
    h.vault
        .store()
        .tenant(&tenant("acme"), "test")
        .unwrap()
        .create(NewCredential::new(ty, name, fields))
        .unwrap()
        .id
}

fn loopback(c: GatewayConfig) -> GatewayConfig {
    c.allow_upstream("127.0.0.0/8".parse().unwrap())
}

#[test]
fn the_real_credential_goes_upstream_and_never_comes_back_in_any_encoding() {
    let up = Upstream::start(None);
    let h = Harness::start(loopback);
    create(
        &h,
        "http_bearer_token",
        "echo-api",
        serde_json::json!({"token": TOKEN, "base_url": up.base("http")}),
    );
    let key = proxy_key(&h, &[ApiScope::Proxy]);
    let r = h.send(
        Req::new("acme.localhost", "POST", "/proxy/echo-api/echo?x=1&y=two")
            .key(&key)
            .header("X-Custom", "kept")
            .header("X-Credvault-Environment", "production")
            .body(br#"{"q": "hello"}"#),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // Upstream: the real token, not the gateway key; the client's own headers and body.
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.line, "POST /v1/echo?x=1&y=two HTTP/1.1");
    assert_eq!(
        s.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(s.header("x-custom"), Some("kept"));
    assert_eq!(s.header("accept-encoding"), Some("identity"));
    assert_eq!(s.header("x-credvault-environment"), None);
    assert!(
        s.headers.iter().all(|(_, v)| !v.contains("cvk_")),
        "the gateway key never goes upstream: {:?}",
        s.headers.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    assert_eq!(s.body, br#"{"q": "hello"}"#);

    // Back: the token in no form, raw, base64 or in a header; the card redacted.
    let body = String::from_utf8(r.body.clone()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("Bearer {TOKEN}"));
    for form in [TOKEN, &b64[..20], &b64] {
        assert!(!body.contains(form), "{body}");
    }
    assert!(body.contains("[cv:injected]"), "{body}");
    assert!(body.contains("[redacted:payment_card]"), "{body}");
    let echoed = r.header("x-echo-auth").unwrap();
    assert!(
        !echoed.contains(TOKEN) && echoed.contains("[cv:injected]"),
        "{echoed}"
    );

    // Recorded: the store's access, the exchange, the request; all under one request id.
    let rid = r.request_id();
    let p = proxied(&h, &rid);
    let Some(Details::Proxied {
        credential_type,
        upstream_status,
        completed,
        masked,
        detections,
        bytes_sent,
        ..
    }) = &p.details
    else {
        panic!("{p:?}")
    };
    assert_eq!(credential_type, "http_bearer_token");
    assert_eq!(*upstream_status, Some(200));
    assert!(*completed);
    assert!(*masked >= 3, "body twice and the header: {masked}");
    assert_eq!(*bytes_sent, 14);
    assert_eq!(
        detections,
        &vec![DlpCount::new("response", "payment_card", "redact", 1)]
    );
    let accessed: Vec<_> = events(&h, Action::Accessed)
        .into_iter()
        .filter(|e| e.request_id.as_deref() == Some(rid.as_str()))
        .collect();
    assert_eq!(accessed.len(), 1);
    assert_eq!(
        accessed[0].details,
        Some(Details::Accessed {
            service: Some("proxy:agent".into()),
            fields: vec!["token".into()]
        })
    );
    let req: Vec<_> = events(&h, Action::Request)
        .into_iter()
        .filter(|e| e.request_id.as_deref() == Some(rid.as_str()))
        .collect();
    assert!(matches!(
        &req[..],
        [AuditEvent { details: Some(Details::Request { route, status: 200, .. }), .. }]
            if route == "/proxy/{credential}/{*path}"
    ));
    // Nothing the vault wrote holds the token in the clear (its records, its database).
    let mut stack = vec![h.dir.path().join("vault")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                assert!(
                    !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
                    "{}",
                    p.display()
                );
            }
        }
    }
}

#[test]
fn an_llm_stream_is_scanned_as_it_streams_and_its_usage_is_recorded() {
    let up = Upstream::start(None);
    let h = Harness::start(loopback);
    create(
        &h,
        "openai_api_key",
        "openai",
        serde_json::json!({"api_key": OPENAI_KEY, "base_url": up.base("http")}),
    );
    let key = proxy_key(&h, &[ApiScope::Proxy]);
    let mut tls = h
        .connect(
            "acme.localhost",
            h.client_config(&[&rustls::version::TLS13]),
        )
        .unwrap();
    tls.sock
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let body = br#"{"model":"gpt-test","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    write!(
        tls,
        "POST /proxy/openai/chat/completions HTTP/1.1\r\nHost: acme.localhost\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    tls.write_all(body).unwrap();
    tls.flush().unwrap();

    // The first event arrives while the upstream still holds the rest of its answer.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(2).any(|w| w == b"\n\n") {
        let n = tls.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended before its first event");
        got.extend_from_slice(&buf[..n]);
    }
    up.go.send(()).unwrap();
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        up.held_until_go.load(Ordering::SeqCst),
        "the client saw the first event before the upstream sent the rest"
    );
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        !text.contains(OPENAI_KEY) && !text.contains(&OPENAI_KEY[..14]),
        "{text}"
    );
    assert!(
        text.contains("your key is [cv:injected] and card [redacted:payment_card]"),
        "{text}"
    );
    assert!(text.contains("data: [DONE]"), "{text}");

    let seen = up.seen();
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );
    assert_eq!(seen[0].body, body);

    let rid = text
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap()
        .trim()
        .to_owned();
    let p = proxied(&h, &rid);
    let Some(Details::Proxied {
        model,
        input_tokens,
        output_tokens,
        completed,
        masked,
        ..
    }) = &p.details
    else {
        panic!("{p:?}")
    };
    assert_eq!(model.as_deref(), Some("gpt-test"));
    assert_eq!((*input_tokens, *output_tokens), (Some(11), Some(22)));
    assert!(*completed);
    assert_eq!(*masked, 1);
}

#[test]
fn dlp_blocks_or_redacts_the_request_before_it_leaves_per_tenant_policy() {
    let up = Upstream::start(None);
    let h = Harness::start(|c| {
        loopback(c).dlp_for(
            tenant("acme"),
            Scanner::builtin()
                .with_action("us_ssn", DlpAction::Block)
                .unwrap()
                .with_custom("project_code", r"PRJ-\d{6}", DlpAction::Redact)
                .unwrap(),
        )
    });
    create(
        &h,
        "http_bearer_token",
        "echo-api",
        serde_json::json!({"token": TOKEN, "base_url": up.base("http")}),
    );
    let key = proxy_key(&h, &[ApiScope::Proxy]);
    let r = h.send(
        Req::new("acme.localhost", "POST", "/proxy/echo-api/echo")
            .key(&key)
            .body(br#"{"ssn": "219-09-9999"}"#),
    );
    assert_eq!((r.status, r.code().as_str()), (403, "dlp_blocked"));
    assert!(up.seen().is_empty(), "a blocked request never leaves");
    let p = proxied(&h, &r.request_id());
    let Some(Details::Proxied {
        detections,
        upstream_status,
        completed,
        ..
    }) = &p.details
    else {
        panic!()
    };
    assert_eq!(
        detections,
        &vec![DlpCount::new("request", "us_ssn", "block", 1)]
    );
    assert_eq!((*upstream_status, *completed), (None, false));

    let r = h.send(
        Req::new("acme.localhost", "POST", "/proxy/echo-api/echo")
            .key(&key)
            .body(br#"{"code": "PRJ-123456", "card": "4111111111111111"}"#),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        up.seen()[0].body,
        br#"{"code": "[redacted:project_code]", "card": "[redacted:payment_card]"}"#
    );

    // A `block` finding in the answer cuts it: the client never gets a complete body.
    let r = h.client().connect(
        "acme.localhost",
        h.client_config(&[&rustls::version::TLS13]),
    );
    let mut tls = r.unwrap();
    write!(
        tls,
        "GET /proxy/echo-api/ssn HTTP/1.1\r\nHost: acme.localhost\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let _ = tls.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(!text.contains("219-09-9999"), "{text}");
    let cut = events(&h, Action::Proxied)
        .into_iter()
        .find(|e| {
            matches!(&e.details, Some(Details::Proxied { detections, .. })
            if detections.iter().any(|d| d.direction == "response" && d.action == "block"))
        })
        .expect("the cut answer is recorded");
    assert!(matches!(
        cut.details,
        Some(Details::Proxied {
            completed: false,
            ..
        })
    ));
}

#[test]
fn refusals_name_their_reason_and_nothing_leaves() {
    let up = Upstream::start(None);
    // No --allow-upstream: loopback is not reached.
    let closed = Harness::start(|c| c);
    create(
        &closed,
        "http_bearer_token",
        "echo-api",
        serde_json::json!({"token": TOKEN, "base_url": up.base("http")}),
    );
    let key = proxy_key(&closed, &[ApiScope::Proxy]);
    let r = closed.send(Req::new("acme.localhost", "GET", "/proxy/echo-api/echo").key(&key));
    assert_eq!(
        (r.status, r.code().as_str()),
        (403, "upstream_refused"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );

    let h = Harness::start(loopback);
    create(
        &h,
        "http_bearer_token",
        "echo-api",
        serde_json::json!({"token": TOKEN, "base_url": up.base("http")}),
    );
    create(
        &h,
        "http_bearer_token",
        "no-base",
        serde_json::json!({"token": TOKEN}),
    );
    let proxy = proxy_key(&h, &[ApiScope::Proxy]);
    let reader = proxy_key(&h, &[ApiScope::Read, ApiScope::Reveal]);
    let narrow = h.key(KeyPolicy::new(tenant("acme"), [ApiScope::Proxy]).credentials(["other-*"]));
    for (key, path, status, code) in [
        (&reader, "/proxy/echo-api/echo", 403, "insufficient_scope"),
        (&narrow, "/proxy/echo-api/echo", 404, "not_found"),
        (&proxy, "/proxy/missing/echo", 404, "not_found"),
        (&proxy, "/proxy/echo-api/../admin", 400, "invalid_request"),
        (&proxy, "/proxy/echo-api/a%2fb", 400, "invalid_request"),
        (&proxy, "/proxy/no-base/echo", 400, "invalid_request"),
        (&proxy, "/proxy/echo-api/gzip", 502, "upstream_encoding"),
    ] {
        let r = h.send(Req::new("acme.localhost", "GET", path).key(key));
        assert_eq!((r.status, r.code().as_str()), (status, code), "{path}");
    }
    // Only the gzip request reached the upstream.
    let lines: Vec<String> = up.seen().into_iter().map(|s| s.line).collect();
    assert_eq!(lines, vec!["GET /v1/gzip HTTP/1.1".to_owned()]);
    // A website login has no authenticate rule: nothing to inject.
    let r = h.send(Req::new("acme.localhost", "GET", "/proxy/stripe-live/x").key(&proxy));
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "unsupported"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}

#[test]
fn the_key_may_come_in_the_upstream_s_own_header_and_the_upstream_may_be_https() {
    let ca = credvault_test::https::Ca::new("upstream CA");
    let (cert_pem, key_pem, _) = ca.leaf(&["127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let (cp, kp) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cp, cert_pem).unwrap();
    std::fs::write(&kp, key_pem).unwrap();
    let cert = credvault_gateway::tls::ReloadingCert::load(&cp, &kp).unwrap();
    let mut server = (*credvault_gateway::tls::server_config(cert, false).unwrap()).clone();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let up = Upstream::start(Some(Arc::new(server)));
    let root = ca.der.clone();
    let h = Harness::start(move |c| loopback(c).upstream_root(root));
    create(
        &h,
        "http_header_auth",
        "azure",
        serde_json::json!({"header_name": "api-key", "api_key": HEADER_KEY, "base_url": up.base("https")}),
    );
    let key = proxy_key(&h, &[ApiScope::Proxy]);
    // No Authorization: the gateway key where the SDK puts its own.
    let r = h.send(Req::new("acme.localhost", "GET", "/proxy/azure/echo").header("api-key", &key));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let seen = up.seen();
    assert_eq!(seen[0].header("api-key"), Some(HEADER_KEY));
    let body = String::from_utf8(r.body).unwrap();
    assert!(!body.contains(HEADER_KEY), "{body}");
    assert!(body.contains(r#""api_key":"[cv:injected]""#), "{body}");

    // An upstream whose certificate the gateway does not trust is not used.
    let h2 = Harness::start(loopback);
    create(
        &h2,
        "http_header_auth",
        "azure",
        serde_json::json!({"header_name": "api-key", "api_key": HEADER_KEY, "base_url": up.base("https")}),
    );
    let key2 = proxy_key(&h2, &[ApiScope::Proxy]);
    let r = h2.send(Req::new("acme.localhost", "GET", "/proxy/azure/echo").key(&key2));
    assert_eq!((r.status, r.code().as_str()), (502, "upstream_unavailable"));
    assert_eq!(
        up.seen().len(),
        1,
        "no request over an untrusted connection"
    );
}
