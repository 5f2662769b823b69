//! The SSH tester: public-key authentication, then disconnect. No command runs.

use std::sync::{Arc, Mutex};

use credvault_audit::TestStatus;
use credvault_schema::{Credential, CredentialType};
use russh::client::{self, Handler};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};

use super::outbound::{run, Fields};
use super::{outcome, CredentialTester, Outbound, TestOutcome};

/// Authenticates to an SSH server with the credential's `private_key` (OpenSSH, PKCS#8 or
/// PEM; `passphrase` when it is encrypted) as `username`, then disconnects.
///
/// The server's host key is not pinned (the type has no field for it); its SHA-256
/// fingerprint is given in the outcome so it can be compared. The private key never leaves
/// the vault's process: public-key authentication signs the session, so a server that is not
/// the one intended learns nothing it could log in with elsewhere.
#[derive(Debug, Default)]
pub struct SshTester {
    out: Outbound,
}

impl SshTester {
    /// A tester connecting where `out` allows.
    pub fn new(out: Outbound) -> Self {
        Self { out }
    }
}

/// Accepts the host key and keeps its fingerprint.
struct Seen(Arc<Mutex<Option<String>>>);

impl Handler for Seen {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let print = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.fingerprint(HashAlg::Sha256),
            PublicKeyOrCertificate::Certificate(c) => c.public_key().fingerprint(HashAlg::Sha256),
        };
        if let Ok(mut seen) = self.0.lock() {
            *seen = Some(print.to_string());
        }
        Ok(true)
    }
}

impl CredentialTester for SshTester {
    fn test(&self, _: &CredentialType, credential: &Credential) -> TestOutcome {
        run(|| {
            let f = Fields(credential);
            let host = f.text("host")?;
            let port = f.port("port", 22)?;
            let user = f.text("username")?;
            let pem = f.secret("private_key")?;
            let key =
                russh::keys::decode_secret_key(pem, f.opt_secret("passphrase")).map_err(|_| {
                    outcome(
                        TestStatus::Failed,
                        "the private key does not decode (not a key, or a wrong passphrase)",
                    )
                })?;
            let addrs = self.out.addrs(host, port)?;
            let unreachable = || outcome(TestStatus::Error, "could not reach the server");
            let stream = self.out.connect(&addrs).map_err(|_| unreachable())?;
            stream.set_nonblocking(true).map_err(|_| unreachable())?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
                .map_err(|_| outcome(TestStatus::Error, "no async runtime"))?;
            let seen = Arc::new(Mutex::new(None));
            let timeout = self.out.timeout;
            let authenticated = runtime.block_on(async {
                let stream = tokio::net::TcpStream::from_std(stream).map_err(|_| unreachable())?;
                let config = Arc::new(client::Config {
                    inactivity_timeout: Some(timeout),
                    ..Default::default()
                });
                let connect = client::connect_stream(config, stream, Seen(seen.clone()));
                let mut handle = tokio::time::timeout(timeout, connect)
                    .await
                    .map_err(|_| outcome(TestStatus::Error, "the server did not answer in time"))?
                    .map_err(|_| {
                        outcome(
                            TestStatus::Error,
                            "the SSH handshake with the server failed",
                        )
                    })?;
                let hash = if key.algorithm().is_rsa() {
                    handle
                        .best_supported_rsa_hash()
                        .await
                        .ok()
                        .flatten()
                        .flatten()
                } else {
                    None
                };
                let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
                let result =
                    tokio::time::timeout(timeout, handle.authenticate_publickey(user, key))
                        .await
                        .map_err(|_| {
                            outcome(TestStatus::Error, "the server did not answer in time")
                        })?
                        .map_err(|_| {
                            outcome(TestStatus::Error, "the server closed the connection")
                        })?;
                let _ = handle
                    .disconnect(russh::Disconnect::ByApplication, "", "en")
                    .await;
                Ok::<bool, TestOutcome>(result.success())
            })?;
            let print = seen.lock().ok().and_then(|s| s.clone()).unwrap_or_default();
            Ok(if authenticated {
                outcome(
                    TestStatus::Ok,
                    format!("logged in as {user}; host key {print}"),
                )
            } else {
                outcome(
                    TestStatus::Failed,
                    format!("the server rejected the key for {user}; host key {print}"),
                )
            })
        })
    }
}
