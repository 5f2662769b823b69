//! A bounded load test on loopback: reveal over TLS through the gateway beside the same reveal
//! called in process, at the same concurrency, in one run. Prints throughput and p50/p99
//! latency of each and their ratios, then checks that every request sent has exactly one
//! `request` record in the audit log (none lost, none unaudited).
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
fn keep_alive(
    s: &mut rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
    head: &[u8],
    buf: &mut Vec<u8>,
) {
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
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("content-length");
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
            KeyPolicy::new(tenant.clone(), [ApiScope::Reveal]).name("load"),
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
        .tenant_rate(unlimited);
    let router = Gateway::new(store.clone(), keys, cfg).router();
    let options = ServeOptions::tls(tls::server_config(cert, false).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
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
    let body = br#"{"fields":["login_url","username","password"],"service":"load"}"#;
    let head = {
        let mut h = format!(
            "POST /api/credentials/{id}/reveal HTTP/1.1\r\nHost: acme.localhost\r\n\
             Authorization: Bearer {api_key}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        h.extend_from_slice(body);
        h
    };
    let fields = ["login_url", "username", "password"];
    // The floor: the same client, TLS and HTTP stack on a route that does no work and
    // writes no record.
    // One keep-alive connection per client thread.
    let connect = |_| {
        (
            client
                .connect("acme.localhost", client.config(&[&rustls::version::TLS13]))
                .unwrap(),
            Vec::with_capacity(4096),
        )
    };
    let health = b"GET /v1/sys/health HTTP/1.1\r\nHost: acme.localhost\r\n\r\n".to_vec();

    println!(
        "reveal of 3 fields, {seconds} s per measurement, audit NoSync, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:>11}  {:>24}  {:>12}  {:>12}  {:>12}",
        "concurrency", "side", "requests/s", "p50 µs", "p99 µs"
    );
    let mut sent = 0usize;
    let mut json = Vec::new();
    for &c in &levels {
        let direct = drive(
            c,
            seconds,
            |_| store.tenant(&tenant, "load").unwrap(),
            |scope| {
                std::hint::black_box(scope.reveal(&id, &fields, Some("load")).unwrap());
            },
        );
        let gateway = drive(c, seconds, connect, |(s, buf)| keep_alive(s, &head, buf));
        sent += gateway.requests;
        let floor = drive(c, seconds, connect, |(s, buf)| keep_alive(s, &health, buf));
        for (side, r) in [
            ("in-process store", &direct),
            ("gateway over TLS", &gateway),
            ("TLS+HTTP floor (health)", &floor),
        ] {
            println!(
                "{c:>11}  {side:>24}  {:>12.0}  {:>12.1}  {:>12.1}",
                r.rate(),
                r.p50_us,
                r.p99_us
            );
        }
        let ratio = gateway.rate() / direct.rate();
        let added_p99 = gateway.p99_us - direct.p99_us;
        println!(
            "{c:>11}  {:>24}  {:>11.1}%  {:>12}  {:>+11.1}",
            "gateway / in-process",
            ratio * 100.0,
            "",
            added_p99
        );
        json.push(serde_json::json!({
            "concurrency": c,
            "in_process": {"rps": direct.rate(), "p50_us": direct.p50_us, "p99_us": direct.p99_us},
            "gateway_tls": {"rps": gateway.rate(), "p50_us": gateway.p50_us, "p99_us": gateway.p99_us},
            "health_tls": {"rps": floor.rate(), "p50_us": floor.p50_us, "p99_us": floor.p99_us},
            "throughput_ratio": ratio,
            "added_p99_us": added_p99,
        }));
    }
    let _ = stop.send(());
    rt.block_on(server).unwrap().unwrap();
    let recorded = vault
        .audit_events(&Query::new().action(Action::Request))
        .unwrap()
        .events
        .len();
    println!("requests sent through the gateway: {sent}; request records: {recorded}");
    println!(
        "{}",
        serde_json::json!({ "runs": json, "sent": sent, "recorded": recorded })
    );
    assert_eq!(sent, recorded, "every request has exactly one record");
}
