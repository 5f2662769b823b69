//! Polling an IMAP mailbox for two-factor mail.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use credvault_store::{CredentialId, Scope};
use rustls_pki_types::{CertificateDer, ServerName};

use crate::{address_token, Outcome, Tfa, TfaError, MAX_EMAIL_LEN};

/// The service recorded when the poller reads the mailbox credential.
pub const IMAP_SERVICE: &str = "tfa-imap";
/// Most messages taken in one poll (the rest wait for the next).
pub const MAX_PER_POLL: usize = 100;
/// Network timeout of each read and write.
pub const IMAP_TIMEOUT: Duration = Duration::from_secs(30);

/// What one poll did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PollReport {
    /// Unread messages looked at (each is marked read).
    pub messages: usize,
    /// Codes stored (a message may reach several credentials).
    pub stored: usize,
    /// Messages that reached no credential, or none that took a code.
    pub ignored: usize,
}

/// The certificates an IMAPS connection trusts: the system's, and these.
#[derive(Clone, Debug, Default)]
pub struct ImapTrust {
    extra: Vec<CertificateDer<'static>>,
}

impl ImapTrust {
    /// Also trusts the certificates (PEM) in `pem`: a private CA, or a server's own.
    ///
    /// # Errors
    /// [`TfaError::Invalid`] when it holds no certificate.
    pub fn with_pem(mut self, pem: &[u8]) -> Result<Self, TfaError> {
        use rustls_pki_types::pem::PemObject;
        let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .map_err(|_| TfaError::Invalid {
                what: "CA file",
                reason: "not PEM certificates".into(),
            })?;
        if certs.is_empty() {
            return Err(TfaError::Invalid {
                what: "CA file",
                reason: "no certificate in it".into(),
            });
        }
        self.extra.extend(certs);
        Ok(self)
    }

    fn config(&self) -> Result<Arc<rustls::ClientConfig>, TfaError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(c);
        }
        for c in &self.extra {
            roots
                .add(c.clone())
                .map_err(|e| TfaError::Receiver(format!("a trusted certificate: {e}")))?;
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| TfaError::Receiver(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Arc::new(cfg))
    }
}

/// The receiving addresses a delivered message names: `Delivered-To`, `X-Original-To`, `To`
/// and `Cc`, those of credentials' form only.
fn recipients(raw: &[u8]) -> Vec<String> {
    let Some(msg) = mail_parser::MessageParser::default().parse_headers(raw) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for name in ["Delivered-To", "X-Original-To"] {
        if let Some(v) = msg.header_raw(name) {
            out.push(
                v.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned(),
            );
        }
    }
    for list in [msg.to(), msg.cc()].into_iter().flatten() {
        for a in list.iter() {
            if let Some(addr) = a.address() {
                out.push(addr.to_owned());
            }
        }
    }
    out.retain(|a| address_token(a).is_some());
    out.sort();
    out.dedup();
    out
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

impl Tfa {
    /// Polls the mailbox that credential `mailbox` (an `imap_mailbox` of the scope's tenant)
    /// holds, once: each unread message (at most [`MAX_PER_POLL`]) is offered to
    /// [`receive_email`](Self::receive_email) for the receiving addresses it names, then
    /// marked read, whatever became of it. The mailbox's password is revealed for the
    /// connection (recorded as an access by service `tfa-imap`). `security = none` is refused
    /// unless the host is a loopback address.
    ///
    /// # Errors
    /// [`TfaError::Store`] (the credential, its access), [`TfaError::Invalid`] (not an
    /// `imap_mailbox`, or clear text off loopback), [`TfaError::Receiver`] (connection, TLS,
    /// login or protocol failure; the server's words, never the password).
    pub fn poll_imap(
        &self,
        scope: &Scope<'_>,
        mailbox: &CredentialId,
        trust: &ImapTrust,
    ) -> Result<PollReport, TfaError> {
        let info = scope.get(mailbox)?;
        if info.type_name != "imap_mailbox" {
            return Err(TfaError::Invalid {
                what: "mailbox",
                reason: format!(
                    "{} is a {} credential, not an imap_mailbox",
                    info.name, info.type_name
                ),
            });
        }
        let public = |k: &str| info.fields.get(k).cloned();
        let host = public("host")
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let port = public("port")
            .and_then(|v| v.as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(993);
        let clear = public("security")
            .and_then(|v| v.as_str().map(str::to_owned))
            .as_deref()
            == Some("none");
        let folder = public("mailbox")
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "INBOX".into());
        let user = public("user")
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            TfaError::Receiver(format!("IMAP {host}:{port}: {what}: {e}"))
        };
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| fail("resolving", &e))?
            .next()
            .ok_or_else(|| TfaError::Receiver(format!("IMAP {host}:{port}: no address")))?;
        if clear && !addr.ip().is_loopback() {
            return Err(TfaError::Invalid {
                what: "mailbox security",
                reason: "clear text (security = none) only to a loopback address; use tls".into(),
            });
        }
        let revealed = scope.reveal_many(
            &[(mailbox.clone(), vec!["password".into()])],
            Some(IMAP_SERVICE),
        )?;
        let password = revealed
            .first()
            .and_then(|r| r.expose_secret("password"))
            .unwrap_or("")
            .to_owned();
        let password = zeroize::Zeroizing::new(password);
        let tcp =
            TcpStream::connect_timeout(&addr, IMAP_TIMEOUT).map_err(|e| fail("connecting", &e))?;
        tcp.set_read_timeout(Some(IMAP_TIMEOUT))
            .map_err(|e| fail("socket", &e))?;
        tcp.set_write_timeout(Some(IMAP_TIMEOUT))
            .map_err(|e| fail("socket", &e))?;
        let stream: Box<dyn Stream + Send> = if clear {
            Box::new(tcp)
        } else {
            let name = match host.parse::<IpAddr>() {
                Ok(ip) => ServerName::IpAddress(ip.into()),
                Err(_) => {
                    ServerName::try_from(host.clone()).map_err(|e| fail("server name", &e))?
                }
            };
            let conn = rustls::ClientConnection::new(trust.config()?, name)
                .map_err(|e| fail("TLS", &e))?;
            Box::new(rustls::StreamOwned::new(conn, tcp))
        };
        let mut client = imap::Client::new(stream);
        client.read_greeting().map_err(|e| fail("greeting", &e))?;
        let mut session = client
            .login(&user, password.as_str())
            .map_err(|(e, _)| fail("login", &e))?;
        session.select(&folder).map_err(|e| fail("select", &e))?;
        let mut uids: Vec<u32> = session
            .uid_search("UNSEEN")
            .map_err(|e| fail("search", &e))?
            .into_iter()
            .collect();
        uids.sort_unstable();
        uids.truncate(MAX_PER_POLL);
        let mut report = PollReport::default();
        for uid in uids {
            let size = session
                .uid_fetch(uid.to_string(), "RFC822.SIZE")
                .map_err(|e| fail("fetch", &e))?
                .iter()
                .find_map(|f| f.size)
                .unwrap_or(0);
            let raw = if usize::try_from(size).unwrap_or(usize::MAX) > MAX_EMAIL_LEN {
                None
            } else {
                let fetched = session
                    .uid_fetch(uid.to_string(), "BODY.PEEK[]")
                    .map_err(|e| fail("fetch", &e))?;
                fetched
                    .iter()
                    .find_map(|f| f.body().map(<[u8]>::to_vec))
                    .map(zeroize::Zeroizing::new)
            };
            report.messages += 1;
            let took = match raw {
                Some(raw) => {
                    let to = recipients(&raw);
                    match self.receive_email(&raw, &to) {
                        Ok(outcomes) => outcomes
                            .iter()
                            .filter(|o| matches!(o, Outcome::Stored { .. }))
                            .count(),
                        // A message that does not parse, or for a credential that cannot be
                        // used now, is not retried: it is read.
                        Err(TfaError::Invalid { .. } | TfaError::Store(_)) => 0,
                        Err(e) => return Err(e),
                    }
                }
                None => 0,
            };
            report.stored += took;
            if took == 0 {
                report.ignored += 1;
            }
            session
                .uid_store(uid.to_string(), "+FLAGS (\\Seen)")
                .map_err(|e| fail("store", &e))?;
        }
        let _ = session.logout();
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn recipients_come_from_delivery_and_address_headers() {
        let raw = b"Delivered-To: vault+abc@mail.example.net\r\nTo: Robot <vault+def@mail.example.net>, other@example.net\r\nCc: vault+abc@mail.example.net\r\nSubject: x\r\n\r\nbody";
        assert_eq!(
            super::recipients(raw),
            ["vault+abc@mail.example.net", "vault+def@mail.example.net"]
        );
        assert!(super::recipients(b"not a message").is_empty());
    }
}
