//! The SMTP tester: connect, TLS, `AUTH`, `NOOP`, `QUIT`. No message is sent.

use credvault_audit::TestStatus;
use credvault_schema::{Credential, CredentialType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::SmtpTransport;

use super::outbound::{run, Fields};
use super::{outcome, CredentialTester, Outbound, TestOutcome};

/// Logs into an SMTP server with the credential's `host`, `port`, `security`, `user` and
/// `password`; sends no mail.
///
/// `security` `starttls` (the default) and `tls` verify the server's certificate against the
/// host name, through rustls; the connection goes to the checked address. `none` sends the
/// login in the clear, to loopback only.
#[derive(Debug, Default)]
pub struct SmtpTester {
    out: Outbound,
}

impl SmtpTester {
    /// A tester connecting where `out` allows.
    pub fn new(out: Outbound) -> Self {
        Self { out }
    }
}

impl CredentialTester for SmtpTester {
    fn test(&self, _: &CredentialType, credential: &Credential) -> TestOutcome {
        run(|| {
            let f = Fields(credential);
            let host = f.text("host")?;
            let port = f.port("port", 587)?;
            let user = f.text("user")?;
            let password = f.secret("password")?;
            let addrs = self.out.addrs(host, port)?;
            let security = f.opt_text("security").unwrap_or("starttls");
            let tls = |host: &str| {
                TlsParameters::new(host.to_owned())
                    .map_err(|_| outcome(TestStatus::Error, "the TLS settings do not build"))
            };
            let tls = match security {
                "none" => {
                    Outbound::clear_text_allowed(&addrs)?;
                    Tls::None
                }
                "tls" => Tls::Wrapper(tls(host)?),
                _ => Tls::Required(tls(host)?),
            };
            let transport = SmtpTransport::builder_dangerous(addrs[0].ip().to_string())
                .port(port)
                .tls(tls)
                .timeout(Some(self.out.timeout))
                .credentials(Credentials::new(user.to_owned(), password.to_owned()))
                .build();
            Ok(match transport.test_connection() {
                Ok(true) => outcome(TestStatus::Ok, format!("logged in as {user}")),
                Ok(false) => outcome(TestStatus::Failed, "the server did not answer NOOP"),
                Err(e) => match e.status() {
                    Some(code) if e.is_permanent() => {
                        let code = code.to_string();
                        let what = if code.starts_with("535") || code.starts_with("530") {
                            "the server rejected the login"
                        } else {
                            "the server refused"
                        };
                        outcome(TestStatus::Failed, format!("{what} ({code})"))
                    }
                    Some(code) => outcome(
                        TestStatus::Error,
                        format!("the server answered {code}, try again later"),
                    ),
                    // lettre tells these two client errors apart only by their text.
                    None if e.is_client() && e.to_string().contains("STARTTLS") => outcome(
                        TestStatus::Error,
                        "the server does not offer STARTTLS; the login is not sent without it",
                    ),
                    None if e.is_client() => outcome(
                        TestStatus::Failed,
                        "the server offers no login mechanism this tester speaks",
                    ),
                    None => outcome(
                        TestStatus::Error,
                        "could not reach the server, or TLS failed",
                    ),
                },
            })
        })
    }
}
