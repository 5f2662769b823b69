//! The PostgreSQL tester: a login and `SELECT 1`.

use credvault_audit::TestStatus;
use credvault_schema::{Credential, CredentialType};
use postgres::config::SslMode;
use postgres::error::SqlState;

use super::outbound::{run, Fields};
use super::{outcome, CredentialTester, Outbound, TestOutcome};

/// Logs into PostgreSQL with the credential's `host`, `port`, `database`, `user` and
/// `password`, and runs `SELECT 1`.
///
/// `ssl_mode` `disable` sends the login in the clear, to loopback only. Every other mode
/// speaks TLS through rustls and verifies the server against the system's roots (stricter
/// than libpq's `require`, which does not verify). `allow` and `prefer` fall back to the
/// clear when TLS fails, as libpq does, on loopback only; elsewhere they act as `require`.
#[derive(Debug, Default)]
pub struct PostgresTester {
    out: Outbound,
}

impl PostgresTester {
    /// A tester connecting where `out` allows.
    pub fn new(out: Outbound) -> Self {
        Self { out }
    }
}

impl CredentialTester for PostgresTester {
    fn test(&self, _: &CredentialType, credential: &Credential) -> TestOutcome {
        run(|| {
            let f = Fields(credential);
            let host = f.text("host")?;
            let port = f.port("port", 5432)?;
            let database = f.text("database")?;
            let user = f.text("user")?;
            let password = f.secret("password")?;
            let addrs = self.out.addrs(host, port)?;
            let mode = match f.opt_text("ssl_mode").unwrap_or("require") {
                "disable" => {
                    Outbound::clear_text_allowed(&addrs)?;
                    SslMode::Disable
                }
                "allow" | "prefer" if Outbound::clear_text_allowed(&addrs).is_ok() => {
                    SslMode::Prefer
                }
                _ => SslMode::Require,
            };
            let mut last = None;
            for addr in &addrs {
                let mut config = postgres::Config::new();
                config
                    .host(host)
                    .hostaddr(addr.ip())
                    .port(port)
                    .dbname(database)
                    .user(user)
                    .password(password)
                    .application_name("credvault-test")
                    .connect_timeout(self.out.timeout);
                config.ssl_mode(mode);
                let connected = if mode == SslMode::Disable {
                    config.connect(postgres::NoTls)
                } else {
                    let tls = crate::postgres::tls_config(None).map_err(|_| {
                        outcome(
                            TestStatus::Error,
                            "no certificate authority to verify the server with",
                        )
                    })?;
                    match config.connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls)) {
                        // As libpq's `prefer`: a TLS attempt that fails (here: a certificate
                        // the roots do not vouch for) is followed by one in the clear. Only
                        // ever to loopback (`Prefer` is chosen for loopback only).
                        Err(e) if mode == SslMode::Prefer && e.as_db_error().is_none() => {
                            config.ssl_mode(SslMode::Disable).connect(postgres::NoTls)
                        }
                        other => other,
                    }
                };
                match connected {
                    Ok(mut client) => {
                        return match client.simple_query("SELECT 1") {
                            Ok(_) => Ok(outcome(
                                TestStatus::Ok,
                                format!("logged in to database {database} as {user}"),
                            )),
                            Err(e) => Ok(classify(&e)),
                        };
                    }
                    Err(e) if e.as_db_error().is_some() => return Ok(classify(&e)),
                    Err(e) => last = Some(e),
                }
            }
            Ok(last.map_or_else(
                || outcome(TestStatus::Error, "no address to connect to"),
                |e| classify(&e),
            ))
        })
    }
}

/// The outcome of a failed connection or query: the server's SQLSTATE (never its message,
/// which can quote what was sent), or that it could not be reached.
fn classify(e: &postgres::Error) -> TestOutcome {
    let Some(db) = e.as_db_error() else {
        return outcome(
            TestStatus::Error,
            "could not reach the server, or TLS failed",
        );
    };
    let code = db.code();
    let what = if *code == SqlState::INVALID_PASSWORD
        || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    {
        "the server rejected the login"
    } else if *code == SqlState::INVALID_CATALOG_NAME {
        "the database does not exist"
    } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        "the user may not connect to the database"
    } else {
        "the server refused"
    };
    outcome(
        TestStatus::Failed,
        format!("{what} (SQLSTATE {})", code.code()),
    )
}
