//! Benchmarks live in `benches/`; see docs/PERFORMANCE.md. This library holds the test data
//! that more than one benchmark uses (the DLP corpus: secrets and log text; the store's
//! credentials), deterministic so that every run measures the same bytes.

/// The name of the `i`-th credential of the store benchmarks (a `website_login`).
pub fn login_name(i: usize) -> String {
    format!("login-{i}")
}

/// The fields of the `i`-th credential of the store benchmarks: a 3-field `website_login`
/// (login URL, user name, password), the same in the SQLite and PostgreSQL benchmarks.
pub fn login_fields(i: usize) -> serde_json::Value {
    serde_json::json!({
        "login_url": "https://portal.example.com/login",
        "username": format!("robot{i}@example.com"),
        "password": format!("correct horse battery staple {i}"),
    })
}

/// SplitMix64's finaliser: a fixed pseudo-random 64-bit value for each `i`.
pub fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 1,000 secrets in the shapes real credentials have, with no shared prefix: random
/// alphanumerics, hex, base64-like, and vendor-prefixed tokens.
pub fn secret(i: u64) -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let pick = |set: &[u8], n: usize, salt: u64| -> String {
        (0..n)
            .map(|k| {
                set[(mix(i * 1000 + salt * 100 + k as u64) % set.len() as u64) as usize] as char
            })
            .collect()
    };
    match i % 10 {
        0..=3 => pick(ALNUM, 32, 1),
        4 | 5 => format!(
            "{:016x}{:016x}{:08x}",
            mix(i),
            mix(i + 7),
            mix(i + 9) as u32
        ),
        6 | 7 => pick(B64, 40, 2),
        8 => format!("ghp_{}", pick(ALNUM, 36, 3)),
        _ => format!("sk_live_{}", pick(ALNUM, 24, 4)),
    }
}

/// 1,000 secrets sharing long prefixes, in three families as real ones come: OpenAI project
/// keys (`sk-proj-` + 48 alphanumerics), GitHub tokens (`ghp_` + 36), and HS256 JWTs (the same
/// 36-byte header `eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.`, a payload that starts alike, and a
/// signature).
pub fn long_prefix_secret(i: u64) -> String {
    let tail = |n: usize, salt: u64| alnum(i, n, salt);
    match i % 3 {
        0 => format!("sk-proj-{}", tail(48, 5)),
        1 => format!("ghp_{}", tail(36, 6)),
        _ => format!(
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLT{}.{}",
            tail(24, 7),
            tail(43, 8)
        ),
    }
}

/// A token of the same families that is *not* one of the known secrets (salted apart), for
/// the lines that carry other people's tokens: they share the known ones' prefixes.
pub fn long_prefix_decoy(i: u64) -> String {
    long_prefix_secret(i + 1_000_000)
}

fn alnum(i: u64, n: usize, salt: u64) -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..n)
        .map(|k| {
            ALNUM[(mix(i * 1000 + salt * 100 + k as u64) % ALNUM.len() as u64) as usize] as char
        })
        .collect()
}

/// About 1 MiB of application log lines: requests, SQL, JSON, stack traces; every 200th line
/// holds a known secret and every 97th a card number or an email address.
pub fn log_text(secret: fn(u64) -> String) -> String {
    log_text_with(secret, None)
}

/// [`log_text`], plus, when `decoy` is given, a line with an unknown token of the same shape
/// every 20th line (ten for each known secret).
pub fn log_text_with(secret: fn(u64) -> String, decoy: Option<fn(u64) -> String>) -> String {
    let mut s = String::with_capacity(1 << 20);
    let mut i = 0u64;
    while s.len() < (1 << 20) {
        let r = mix(i);
        let line = match r % 6 {
            0 => format!("2026-11-22T10:{:02}:{:02}.{:03}Z INFO  http request method=GET path=/api/v1/orders/{} status=200 duration_ms={} ip=10.0.{}.{}\n", r % 60, (r >> 8) % 60, (r >> 16) % 1000, r % 100_000, r % 900, (r >> 4) % 256, (r >> 12) % 256),
            1 => format!("2026-11-22T10:00:00Z DEBUG sql: SELECT id, status FROM invoices WHERE tenant_id = {} AND created_at > '2026-11-01' LIMIT 50\n", r % 10_000),
            2 => format!("{{\"level\":\"info\",\"msg\":\"job finished\",\"job_id\":\"{:016x}\",\"took\":{},\"retries\":{}}}\n", r, r % 5000, r % 3),
            3 => format!("    at com.acme.billing.InvoiceService.process(InvoiceService.java:{})\n", r % 900),
            4 => format!("2026-11-22T10:00:00Z WARN  cache miss key=user:{}:profile ttl=300 node=cache-{}.internal\n", r % 100_000, r % 8),
            _ => format!("2026-11-22T10:00:00Z INFO  worker {} heartbeat load={:.2} mem={}MiB version=v2.14.{}\n", r % 64, (r % 100) as f64 / 100.0, r % 4096, r % 20),
        };
        s.push_str(&line);
        if i.is_multiple_of(200) {
            s.push_str(&format!(
                "2026-11-22T10:00:00Z ERROR auth failed token={}\n",
                secret(i % 1000)
            ));
        }
        if let Some(decoy) = decoy.filter(|_| i.is_multiple_of(20)) {
            s.push_str(&format!(
                "2026-11-22T10:00:00Z DEBUG upstream call authorization=Bearer {}\n",
                decoy(i)
            ));
        }
        if i.is_multiple_of(97) {
            s.push_str(
                "2026-11-22T10:00:00Z INFO  payment card=4111111111111111 by billing@example.com\n",
            );
        }
        i += 1;
    }
    s
}
