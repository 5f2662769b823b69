//! The Redis tester: `AUTH` (with the ACL user when set), `SELECT` and `PING`.

use credvault_audit::TestStatus;
use credvault_schema::{Credential, CredentialType};
use redis::{ConnectionAddr, ErrorKind, IntoConnectionInfo, RedisConnectionInfo};

use super::outbound::{run, Fields};
use super::{outcome, CredentialTester, Outbound, TestOutcome};

/// Connects to Redis with the credential's `host`, `port`, `username`, `password` and
/// `database`, and sends `PING`.
///
/// With `tls` the connection speaks TLS through rustls and verifies the server's certificate
/// against the host name (the client library resolves the name again; an address a rebinding
/// DNS server slips in cannot present a certificate for that name). Without it the password
/// goes in the clear, to the checked loopback address only.
#[derive(Debug, Default)]
pub struct RedisTester {
    out: Outbound,
}

impl RedisTester {
    /// A tester connecting where `out` allows.
    pub fn new(out: Outbound) -> Self {
        Self { out }
    }
}

impl CredentialTester for RedisTester {
    fn test(&self, _: &CredentialType, credential: &Credential) -> TestOutcome {
        run(|| {
            let f = Fields(credential);
            let host = f.text("host")?;
            let port = f.port("port", 6379)?;
            let addrs = self.out.addrs(host, port)?;
            let addr = if f.boolean("tls", false) {
                ConnectionAddr::TcpTls {
                    host: host.to_owned(),
                    port,
                    insecure: false,
                    tls_params: None,
                }
            } else {
                Outbound::clear_text_allowed(&addrs)?;
                ConnectionAddr::Tcp(addrs[0].ip().to_string(), port)
            };
            let mut settings = RedisConnectionInfo::default()
                .set_db(f.integer("database", 0))
                .set_skip_set_lib_name();
            if let Some(user) = f.opt_text("username") {
                settings = settings.set_username(user);
            }
            if let Some(password) = f.opt_secret("password") {
                settings = settings.set_password(password);
            }
            let result = addr
                .into_connection_info()
                .map(|info| info.set_redis_settings(settings))
                .and_then(redis::Client::open)
                .and_then(|client| client.get_connection_with_timeout(self.out.timeout))
                .and_then(|mut conn| {
                    conn.set_read_timeout(Some(self.out.timeout))?;
                    conn.set_write_timeout(Some(self.out.timeout))?;
                    redis::cmd("PING").query::<String>(&mut conn)
                });
            Ok(match result {
                Ok(_) => outcome(TestStatus::Ok, "authenticated; PING answered"),
                Err(e) if e.kind() == ErrorKind::AuthenticationFailed => {
                    outcome(TestStatus::Failed, "the server rejected the login")
                }
                Err(e) => match e.code() {
                    Some(code @ ("WRONGPASS" | "NOAUTH" | "NOPERM")) => outcome(
                        TestStatus::Failed,
                        format!("the server rejected the login ({code})"),
                    ),
                    Some(code) => {
                        outcome(TestStatus::Failed, format!("the server refused ({code})"))
                    }
                    None => outcome(
                        TestStatus::Error,
                        "could not reach the server, or TLS failed",
                    ),
                },
            })
        })
    }
}
