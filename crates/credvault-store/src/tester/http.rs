//! The HTTP tester.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use credvault_audit::TestStatus;
use credvault_schema::{BodyFormat, Credential, CredentialType};
use zeroize::Zeroizing;

use super::{outcome, CredentialTester, Outbound, TestOutcome};
use crate::net::{AddressClass, Destination, NetworkPolicy, Resolve};

/// Longest response body read (for the `json_path` check).
const MAX_BODY: u64 = 1 << 20;

/// The HTTP tester: renders the type's test request (its `authenticate` applied), sends it
/// over rustls with a 10 s timeout and no redirects, and checks the status and an optional
/// JSON path.
///
/// Where the request goes is decided by a [`NetworkPolicy`] (default: public addresses only):
/// the URL is parsed once with the WHATWG parser, its host resolved once, every address
/// checked, and the connection made to those addresses only (a DNS answer cannot change
/// between the check and the connection). Loopback, private and link-local addresses
/// (`169.254.169.254`, where cloud metadata listens) are refused unless
/// [`allow`](Self::allow)ed; plain `http://` only reaches loopback.
pub struct HttpTester {
    out: Outbound,
}

impl std::fmt::Debug for HttpTester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTester")
            .field("out", &self.out)
            .finish()
    }
}

impl Default for HttpTester {
    fn default() -> Self {
        Self::new()
    }
}

/// Answers the HTTP client's lookup with the addresses already checked, for the checked host
/// only.
pub(crate) struct Pinned {
    netloc: String,
    addrs: Vec<SocketAddr>,
}

impl ureq::Resolver for Pinned {
    fn resolve(&self, netloc: &str) -> std::io::Result<Vec<SocketAddr>> {
        if netloc == self.netloc {
            Ok(self.addrs.clone())
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "not the host that was checked",
            ))
        }
    }
}

impl Pinned {
    /// An agent that connects to `dest`'s checked addresses only, follows no redirect and
    /// gives up after `timeout`.
    pub(crate) fn agent(dest: &Destination, timeout: Duration) -> ureq::Agent {
        ureq::AgentBuilder::new()
            .timeout(timeout)
            .redirects(0)
            .resolver(Self {
                netloc: dest.netloc(),
                addrs: dest.addrs().to_vec(),
            })
            .build()
    }
}

impl HttpTester {
    /// A tester with a 10 s timeout, public addresses only, the system resolver.
    pub fn new() -> Self {
        Self::with_outbound(Outbound::new())
    }

    /// A tester with another timeout.
    pub fn with_timeout(timeout: Duration) -> Self {
        Self::with_outbound(Outbound::new().with_timeout(timeout))
    }

    /// A tester connecting where `out` allows.
    pub fn with_outbound(out: Outbound) -> Self {
        Self { out }
    }

    /// Also lets requests reach `class` (loopback, private or link-local; reserved addresses
    /// are never reached). An explicit vault setting: `credvault test --allow-network`.
    #[must_use]
    pub fn allow(mut self, class: AddressClass) -> Self {
        self.out = self.out.allow(class);
        self
    }

    /// Uses this network policy.
    #[must_use]
    pub fn with_policy(mut self, policy: NetworkPolicy) -> Self {
        self.out = self.out.with_policy(policy);
        self
    }

    /// Resolves host names with `resolver` instead of the system's.
    #[must_use]
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolve>) -> Self {
        self.out = self.out.with_resolver(resolver);
        self
    }

    /// Refuses plain HTTP even to loopback.
    #[must_use]
    pub fn https_only(mut self) -> Self {
        self.out = self.out.https_only();
        self
    }
}

impl CredentialTester for HttpTester {
    fn test(&self, ty: &CredentialType, credential: &Credential) -> TestOutcome {
        let Some(req) = ty.test_request(credential) else {
            return outcome(TestStatus::Error, "the type has no HTTP test request");
        };
        let dest = match Destination::check(
            req.url.expose_secret(),
            &self.out.policy,
            &*self.out.resolver,
        ) {
            Ok(d) => d,
            Err(e) => return outcome(TestStatus::Error, format!("refused: {e}")),
        };
        let agent = Pinned::agent(&dest, self.out.timeout);
        let mut r = agent.request_url(&req.method, dest.url());
        for (k, v) in &req.parts.headers {
            r = r.set(k.expose_secret(), v.expose_secret());
        }
        for (k, v) in &req.parts.query {
            r = r.query(k.expose_secret(), v.expose_secret());
        }
        if let Some((u, p)) = &req.parts.basic {
            let raw = Zeroizing::new(format!("{}:{}", u.expose_secret(), p.expose_secret()));
            let b64 =
                Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(raw.as_bytes()));
            let header = Zeroizing::new(format!("Basic {}", b64.as_str()));
            r = r.set("Authorization", &header);
        }
        let res = if req.parts.body.is_empty() {
            r.call()
        } else {
            match req.body_format {
                BodyFormat::Form => {
                    let pairs: Vec<(&str, &str)> = req
                        .parts
                        .body
                        .iter()
                        .map(|(k, v)| (k.expose_secret(), v.expose_secret()))
                        .collect();
                    r.send_form(&pairs)
                }
                _ => {
                    let obj: serde_json::Map<String, serde_json::Value> = req
                        .parts
                        .body
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.expose_secret().to_owned(),
                                serde_json::Value::String(v.expose_secret().to_owned()),
                            )
                        })
                        .collect();
                    let mut body = serde_json::Value::Object(obj);
                    let text = Zeroizing::new(body.to_string());
                    crate::model::wipe_json(&mut body);
                    r.set("Content-Type", "application/json").send_string(&text)
                }
            }
        };
        let resp = match res {
            Ok(resp) => resp,
            Err(ureq::Error::Status(code, _)) => {
                return if req.success_status.contains(&code) {
                    outcome(TestStatus::Ok, format!("HTTP {code}"))
                } else if code == 401 || code == 403 {
                    outcome(
                        TestStatus::Failed,
                        format!("rejected by the service (HTTP {code})"),
                    )
                } else {
                    outcome(TestStatus::Failed, format!("unexpected status HTTP {code}"))
                };
            }
            // The transport error's kind only: its text may quote the URL, which may hold
            // a secret.
            Err(ureq::Error::Transport(t)) => {
                return outcome(
                    TestStatus::Error,
                    format!("could not reach the service ({})", t.kind()),
                )
            }
        };
        let code = resp.status();
        if !req.success_status.contains(&code) {
            return outcome(TestStatus::Failed, format!("unexpected status HTTP {code}"));
        }
        if let Some(path) = &req.success_json_path {
            let mut body = Vec::new();
            if resp
                .into_reader()
                .take(MAX_BODY)
                .read_to_end(&mut body)
                .is_err()
            {
                return outcome(TestStatus::Error, "could not read the response body");
            }
            let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) else {
                return outcome(TestStatus::Failed, "the response is not JSON");
            };
            let mut cur = &json;
            for seg in path {
                let next = match cur {
                    serde_json::Value::Object(o) => o.get(seg),
                    serde_json::Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
                    _ => None,
                };
                match next {
                    Some(n) => cur = n,
                    None => {
                        return outcome(
                            TestStatus::Failed,
                            format!("HTTP {code} but the response lacks {}", path.join(".")),
                        )
                    }
                }
            }
        }
        outcome(TestStatus::Ok, format!("HTTP {code}"))
    }
}
