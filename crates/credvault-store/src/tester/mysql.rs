//! The MySQL / MariaDB tester: a login and `PING`.

use credvault_audit::TestStatus;
use credvault_schema::{Credential, CredentialType};
use mysql::{OptsBuilder, SslOpts};

use super::outbound::{run, Fields};
use super::{outcome, CredentialTester, Outbound, TestOutcome};

/// Logs into MySQL or MariaDB with the credential's `host`, `port`, `database`, `user` and
/// `password`, and pings the server.
///
/// With `ssl` (the default) the connection speaks TLS through rustls and verifies the
/// server's certificate against the host name (the client library resolves the name again; an
/// address a rebinding DNS server slips in cannot present a certificate for that name).
/// Without it the login goes in the clear, to the checked loopback address only.
#[derive(Debug, Default)]
pub struct MysqlTester {
    out: Outbound,
}

impl MysqlTester {
    /// A tester connecting where `out` allows.
    pub fn new(out: Outbound) -> Self {
        Self { out }
    }
}

impl CredentialTester for MysqlTester {
    fn test(&self, _: &CredentialType, credential: &Credential) -> TestOutcome {
        run(|| {
            let f = Fields(credential);
            let host = f.text("host")?;
            let port = f.port("port", 3306)?;
            let database = f.text("database")?;
            let user = f.text("user")?;
            let password = f.secret("password")?;
            let addrs = self.out.addrs(host, port)?;
            let tls = f.boolean("ssl", true);
            let target = if tls {
                host.to_owned()
            } else {
                Outbound::clear_text_allowed(&addrs)?;
                addrs[0].ip().to_string()
            };
            let opts = OptsBuilder::new()
                .ip_or_hostname(Some(target))
                .tcp_port(port)
                .prefer_socket(false)
                .user(Some(user))
                .pass(Some(password))
                .db_name(Some(database))
                .tcp_connect_timeout(Some(self.out.timeout))
                .read_timeout(Some(self.out.timeout))
                .write_timeout(Some(self.out.timeout))
                .stmt_cache_size(0)
                .ssl_opts(tls.then(SslOpts::default));
            let result = mysql::Conn::new(opts).and_then(|mut c| c.ping());
            Ok(match result {
                Ok(()) => outcome(
                    TestStatus::Ok,
                    format!("logged in to database {database} as {user}"),
                ),
                Err(mysql::Error::MySqlError(e)) => {
                    let what = match e.code {
                        1045 => "the server rejected the login",
                        1044 => "the user may not use the database",
                        1049 => "the database does not exist",
                        _ => "the server refused",
                    };
                    outcome(TestStatus::Failed, format!("{what} (error {})", e.code))
                }
                Err(_) => outcome(
                    TestStatus::Error,
                    "could not reach the server, or TLS failed",
                ),
            })
        })
    }
}
