//! Where the real providers are: `.ci/kms-services` starts them and exports these variables.
//! Outside CI a test whose component is missing is skipped with a message; with `CI` set it
//! fails, so CI never passes by skipping.
#![allow(dead_code)]

/// The variable's value, or `None` (skip) outside CI; panics under CI when it is missing.
pub(crate) fn service_env(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{var} is not set but CI is: .ci/kms-services starts {what} and sets it")
        }
        _ => {
            eprintln!("skipped: {var} is not set (no {what} to test against)");
            None
        }
    }
}

/// A label no other test (or earlier run) uses.
pub(crate) fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A loopback TCP relay to the KMS that can be cut: KMS going away after open.
pub(crate) struct Relay {
    pub(crate) port: u16,
    down: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    pub(crate) fn start(target: &str) -> Self {
        let target = target.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (d, c) = (Arc::clone(&down), Arc::clone(&conns));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if d.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                for s in [&client, &server] {
                    c.lock().unwrap().push(s.try_clone().unwrap());
                }
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Relay { port, down, conns }
    }

    pub(crate) fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// Runs `f` with an SDK client of moto's KMS at `url` (what an operator does in the KMS
/// console: make keys, move aliases, disable keys).
#[cfg(feature = "aws-kms")]
pub(crate) fn kms_admin<T>(
    url: &str,
    creds: &credvault_kms::aws::StaticCredentials,
    f: impl FnOnce(aws_sdk_kms::Client) -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>>,
) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let conf = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .http_client(http)
        .endpoint_url(url)
        .region(aws_sdk_kms::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            creds.access_key_id.clone(),
            creds.secret_access_key.as_str().to_owned(),
            None,
            None,
            "test",
        ))
        .build();
    rt.block_on(f(aws_sdk_kms::Client::from_conf(conf)))
}

/// A new KMS key's id.
#[cfg(feature = "aws-kms")]
pub(crate) fn create_kms_key(url: &str, creds: &credvault_kms::aws::StaticCredentials) -> String {
    kms_admin(url, creds, |c| {
        Box::pin(async move {
            let out = c.create_key().send().await.unwrap();
            out.key_metadata().unwrap().key_id().to_owned()
        })
    })
}
