//! A bounded load test on loopback: masked get, reveal and TOTP code over TLS through the
//! gateway beside the same store calls in process, and the proxy beside a direct call of its
//! (local, plain HTTP) upstream, at the same concurrency, in one run. Prints throughput and
//! p50/p99 latency of each and their ratios, then checks that every request sent has exactly
//! one `request` record in the audit log, and every proxied one a `proxied` record (none lost,
//! none unaudited).
//!
//! ```text
//! cargo run --release -p credvault-gateway --example load -- [SECONDS] [CONCURRENCY...]
//! ```
//! Defaults: 5 seconds per measurement, concurrency 1 and 4. The vault's audit log runs with
//! `Durability::NoSync` (records written before each answer, no fsync), as in the store's
//! reveal benchmark; the gateway's own records go to the same log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use credvault_gateway::{
    serve, tls, ApiScope, Gateway, GatewayConfig, KeyPolicy, KeyStore, RateLimit, ServeOptions,
    ServerKey,
};
use credvault_store::audit::{Action, Query};
use credvault_store::{Durability, NewCredential, TenantId, Vault, VaultOptions};
use credvault_test::https::{Ca, Client};

struct Run {
    requests: usize,
    seconds: f64,
    p50_us: f64,
    p99_us: f64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

fn summarise(mut lat: Vec<Duration>, seconds: f64) -> Run {
    lat.sort_unstable();
    let at = |q: f64| {
        let i = ((lat.len() as f64 - 1.0) * q).round() as usize;
        lat[i].as_secs_f64() * 1e6
    };
    Run {
        requests: lat.len(),
        seconds,
        p50_us: at(0.50),
        p99_us: at(0.99),
    }
}

/// `threads` workers each calling `work` until `seconds` pass; every latency.
fn drive<S: Send>(
    threads: usize,
    seconds: f64,
    setup: impl Fn(usize) -> S + Sync,
    work: impl Fn(&mut S) + Sync,
) -> Run {
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    let lat: Vec<Duration> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (setup, work) = (&setup, &work);
                sc.spawn(move || {
                    let mut state = setup(t);
                    let mut out = Vec::with_capacity(100_000);
                    while Instant::now() < until {
                        let t0 = Instant::now();
                        work(&mut state);
                        out.push(t0.elapsed());
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    summarise(lat, start.elapsed().as_secs_f64())
}

/// One keep-alive HTTP/1.1 request on an open TLS stream; panics unless 200.
fn keep_alive(s: &mut (impl Read + Write), head: &[u8], buf: &mut Vec<u8>) {
    s.write_all(head).unwrap();
    s.flush().unwrap();
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).unwrap();
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            let len: Option<usize> = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            });
            let Some(len) = len else {
                // Chunked (the proxy streams): up to the last chunk.
                while !buf.ends_with(b"\r\n0\r\n\r\n") {
                    let n = s.read(&mut chunk).unwrap();
                    assert!(n > 0, "connection closed");
                    buf.extend_from_slice(&chunk[..n]);
                }
                return;
            };
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).unwrap();
                assert!(n > 0, "connection closed");
                buf.extend_from_slice(&chunk[..n]);
            }
            return;
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds: f64 = args.first().map_or(5.0, |s| s.parse().unwrap());
    let levels: Vec<usize> = if args.len() > 1 {
        args[1..].iter().map(|s| s.parse().unwrap()).collect()
    } else {
        vec![1, 4]
    };

    let dir = tempfile::tempdir().unwrap();
    let vault = Arc::new(
        Vault::init(
            &dir.path().join("vault"),
            VaultOptions::default().audit(Durability::NoSync),
        )
        .unwrap(),
    );
    let store = vault.store().clone();
    let tenant = TenantId::new("acme").unwrap();
    store.create_tenant(&tenant, "acme", "load").unwrap();
    let id = store
        .tenant(&tenant, "load")
        .unwrap()
        .create(NewCredential::new(
            "website_login",
            "login",
            serde_json::json!({
                "login_url": "https://portal.example.com/login",
                "username": "robot@example.com",
                "password": "correct horse battery staple",
                "totp_secret": "JBSWY3DPEHPK3PXPJBSWY3DP",
            }),
        ))
        .unwrap()
        .id;

    // The proxy's upstream: a small JSON answer, plain HTTP on loopback.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let upstream = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let answer = axum::Router::new().route(
        "/v1/models",
        axum::routing::get(|| async {
            (
                [("content-type", "application/json")],
                r#"{"object":"list","data":[{"id":"model-a","object":"model"},{"id":"model-b","object":"model"}]}"#,
            )
        }),
    );
    rt.spawn(async move { axum::serve(upstream, answer).await });
    let proxied = store
        .tenant(&tenant, "load")
        .unwrap()
        .create(NewCredential::new(
            "http_bearer_token",
            "upstream",
            serde_json::json!({
                "token": "tok_load_5f1e2d3c4b5a69788796a5b4c3d2e1f0",
                "base_url": format!("http://{upstream_addr}/v1"),
            }),
        ))
        .unwrap()
        .id;

    let ca = Ca::new("load CA");
    let (cert, key, _) = ca.leaf(&["acme.localhost"]);
    std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
    std::fs::write(dir.path().join("key.pem"), key).unwrap();
    let cert =
        tls::ReloadingCert::load(dir.path().join("cert.pem"), dir.path().join("key.pem")).unwrap();
    let keys = Arc::new(
        KeyStore::open(
            &dir.path().join("gateway.db"),
            ServerKey::load_or_create(&dir.path().join("gateway.key")).unwrap(),
        )
        .unwrap(),
    );
    let api_key = keys
        .create(
            KeyPolicy::new(
                tenant.clone(),
                [
                    ApiScope::Read,
                    ApiScope::Reveal,
                    ApiScope::Totp,
                    ApiScope::Proxy,
                ],
            )
            .name("load"),
            0,
        )
        .unwrap()
        .expose()
        .to_owned();
    let unlimited = RateLimit {
        count: 1_000_000,
        per_seconds: 1,
    };
    let cfg = GatewayConfig::default()
        .host("acme.localhost", tenant.clone())
        .unwrap()
        .key_rate(unlimited)
        .tenant_rate(unlimited)
        .allow_upstream("127.0.0.1/32".parse().unwrap());
    let router = Gateway::new(store.clone(), keys, cfg).router();
    let options = ServeOptions::tls(tls::server_config(cert, false).unwrap());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(serve(listener, router, options, async {
        let _ = stopped.await;
    }));
    let client = Client {
        addr,
        ca: ca.der.clone(),
    };
    let reveal_body = br#"{"fields":["login_url","username","password"],"service":"load"}"#;
    let request = |method: &str, path: &str, body: &[u8]| {
        let mut h = format!(
            "{method} {path} HTTP/1.1\r\nHost: acme.localhost\r\n\
             Authorization: Bearer {api_key}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        h.extend_from_slice(body);
        h
    };
    let get_head = request("GET", &format!("/api/credentials/{id}"), b"");
    let reveal_head = request(
        "POST",
        &format!("/api/credentials/{id}/reveal"),
        reveal_body,
    );
    let totp_head = request("POST", &format!("/api/credentials/{id}/totp"), b"");
    let proxy_head = request("GET", &format!("/proxy/{proxied}/models"), b"");
    let upstream_head = b"GET /v1/models HTTP/1.1\r\nHost: upstream\r\n\r\n".to_vec();
    let fields = ["login_url", "username", "password"];
    // One keep-alive connection per client thread.
    let connect = |_| {
        (
            client
                .connect("acme.localhost", client.config(&[&rustls::version::TLS13]))
                .unwrap(),
            Vec::with_capacity(4096),
        )
    };
    let connect_upstream = |_| {
        let s = std::net::TcpStream::connect(upstream_addr).unwrap();
        s.set_nodelay(true).unwrap();
        (s, Vec::with_capacity(4096))
    };
    // The floor: the same client, TLS and HTTP stack on a route that does no work and
    // writes no record.
    let health = b"GET /v1/sys/health HTTP/1.1\r\nHost: acme.localhost\r\n\r\n".to_vec();

    println!(
        "{seconds} s per measurement, audit NoSync, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:>11}  {:>12}  {:>26}  {:>12}  {:>10}  {:>10}",
        "concurrency", "operation", "side", "requests/s", "p50 µs", "p99 µs"
    );
    let mut sent = 0usize;
    let mut proxied_sent = 0usize;
    let mut json = Vec::new();
    let show = |c: usize, op: &str, side: &str, r: &Run| {
        println!(
            "{c:>11}  {op:>12}  {side:>26}  {:>12.0}  {:>10.1}  {:>10.1}",
            r.rate(),
            r.p50_us,
            r.p99_us
        );
    };
    let row =
        |r: &Run| serde_json::json!({"rps": r.rate(), "p50_us": r.p50_us, "p99_us": r.p99_us});
    for &c in &levels {
        let floor = drive(c, seconds, connect, |(s, buf)| keep_alive(s, &health, buf));
        show(c, "health", "TLS+HTTP floor", &floor);
        type Direct<'a> = Box<dyn Fn(&mut credvault_store::Scope<'a>) + Sync + 'a>;
        let ops: [(&str, &[u8], Direct<'_>); 3] = [
            (
                "masked get",
                &get_head,
                Box::new(|scope| {
                    std::hint::black_box(scope.get(&id).unwrap());
                }),
            ),
            (
                "reveal",
                &reveal_head,
                Box::new(|scope| {
                    std::hint::black_box(scope.reveal(&id, &fields, Some("load")).unwrap());
                }),
            ),
            (
                "totp code",
                &totp_head,
                Box::new(|scope| {
                    std::hint::black_box(scope.totp_code(&id, Some("load")).unwrap());
                }),
            ),
        ];
        for (op, head, direct_call) in &ops {
            let direct = drive(
                c,
                seconds,
                |_| store.tenant(&tenant, "load").unwrap(),
                |scope| direct_call(scope),
            );
            let gateway = drive(c, seconds, connect, |(s, buf)| keep_alive(s, head, buf));
            sent += gateway.requests;
            show(c, op, "in-process store", &direct);
            show(c, op, "gateway over TLS", &gateway);
            let ratio = gateway.rate() / direct.rate();
            let added_p99 = gateway.p99_us - direct.p99_us;
            println!(
                "{c:>11}  {op:>12}  {:>26}  {:>11.1}%  {:>10}  {:>+10.1}",
                "gateway / in-process",
                ratio * 100.0,
                "",
                added_p99
            );
            json.push(serde_json::json!({
                "concurrency": c, "operation": op,
                "in_process": row(&direct), "gateway_tls": row(&gateway), "health_tls": row(&floor),
                "throughput_ratio": ratio, "added_p99_us": added_p99,
            }));
        }
        let direct = drive(c, seconds, connect_upstream, |(s, buf)| {
            keep_alive(s, &upstream_head, buf)
        });
        let gateway = drive(c, seconds, connect, |(s, buf)| {
            keep_alive(s, &proxy_head, buf)
        });
        sent += gateway.requests;
        proxied_sent += gateway.requests;
        show(c, "proxy", "upstream directly (HTTP)", &direct);
        show(c, "proxy", "through gateway (TLS)", &gateway);
        let ratio = gateway.rate() / direct.rate();
        let added_p99 = gateway.p99_us - direct.p99_us;
        println!(
            "{c:>11}  {:>12}  {:>26}  {:>11.1}%  {:>10}  {:>+10.1}",
            "proxy",
            "gateway / direct",
            ratio * 100.0,
            "",
            added_p99
        );
        json.push(serde_json::json!({
            "concurrency": c, "operation": "proxy",
            "upstream_direct": row(&direct), "gateway_tls": row(&gateway),
            "throughput_ratio": ratio, "added_p99_us": added_p99,
        }));
    }
    let _ = stop.send(());
    rt.block_on(server).unwrap().unwrap();
    let count = |a: Action| {
        vault
            .audit_events(&Query::new().action(a))
            .unwrap()
            .events
            .len()
    };
    let (recorded, proxied_recorded) = (count(Action::Request), count(Action::Proxied));
    println!(
        "requests sent through the gateway: {sent}; request records: {recorded}; \
         proxied: {proxied_sent}; proxied records: {proxied_recorded}"
    );
    println!(
        "{}",
        serde_json::json!({ "runs": json, "sent": sent, "recorded": recorded,
            "proxied_sent": proxied_sent, "proxied_recorded": proxied_recorded })
    );
    assert_eq!(sent, recorded, "every request has exactly one record");
    assert_eq!(
        proxied_sent, proxied_recorded,
        "every proxied request has its record"
    );
}
