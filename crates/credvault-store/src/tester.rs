//! Credential testing: a [`CredentialTester`] per test kind, and an HTTP tester driven by the
//! type's declarative `test` and `authenticate` blocks.

use std::collections::HashMap;
use std::sync::Arc;

use credvault_audit::TestStatus;
use credvault_schema::{Credential, CredentialType, TestKind};

use crate::model::TestOutcome;

/// Checks a credential against its service. Implementations must not put a secret in the
/// outcome's message.
pub trait CredentialTester: Send + Sync {
    /// Runs the test.
    fn test(&self, ty: &CredentialType, credential: &Credential) -> TestOutcome;
}

/// Testers by test kind.
#[derive(Clone, Default)]
pub struct TesterRegistry {
    map: HashMap<TestKind, Arc<dyn CredentialTester>>,
}

impl std::fmt::Debug for TesterRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries(self.map.keys().map(|k| k.as_str()))
            .finish()
    }
}

impl TesterRegistry {
    /// No testers.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The built-in testers: HTTP (feature `http-tester`).
    pub fn with_defaults() -> Self {
        #[allow(unused_mut)]
        let mut r = Self::default();
        #[cfg(feature = "http-tester")]
        r.register(TestKind::Http, Arc::new(HttpTester::new()));
        r
    }

    /// Registers (or replaces) the tester for `kind`.
    pub fn register(&mut self, kind: TestKind, tester: Arc<dyn CredentialTester>) -> &mut Self {
        self.map.insert(kind, tester);
        self
    }

    /// The tester for `kind`.
    pub fn get(&self, kind: TestKind) -> Option<&Arc<dyn CredentialTester>> {
        self.map.get(&kind)
    }
}

#[cfg(feature = "http-tester")]
pub use http::HttpTester;

#[cfg(feature = "http-tester")]
mod http {
    use std::io::Read;
    use std::time::Duration;

    use base64::Engine;
    use credvault_audit::TestStatus;
    use credvault_schema::{BodyFormat, Credential, CredentialType};
    use zeroize::Zeroizing;

    use super::{CredentialTester, TestOutcome};

    /// Longest response body read (for the `json_path` check).
    const MAX_BODY: u64 = 1 << 20;

    /// The HTTP tester: renders the type's test request (its `authenticate` applied), sends
    /// it over rustls with a 10 s timeout and no redirects, and checks the status and an
    /// optional JSON path. Plain `http://` is refused except to loopback addresses.
    pub struct HttpTester {
        agent: ureq::Agent,
        allow_plain_loopback: bool,
    }

    impl std::fmt::Debug for HttpTester {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("HttpTester").finish_non_exhaustive()
        }
    }

    impl Default for HttpTester {
        fn default() -> Self {
            Self::new()
        }
    }

    fn outcome(status: TestStatus, message: impl Into<String>) -> TestOutcome {
        TestOutcome {
            status,
            message: message.into(),
        }
    }

    fn is_loopback(host: &str) -> bool {
        let h = host.trim_start_matches('[').trim_end_matches(']');
        h == "localhost"
            || h.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// The host of an absolute URL, if it has one.
    fn url_host(url: &str) -> Option<(&str, &str)> {
        let (scheme, rest) = url.split_once("://")?;
        let authority = rest.split(['/', '?', '#']).next()?;
        let hostport = authority.rsplit('@').next()?;
        let host = if hostport.starts_with('[') {
            hostport.get(1..)?.split(']').next()?
        } else {
            hostport.split(':').next()?
        };
        Some((scheme, host))
    }

    impl HttpTester {
        /// A tester with a 10 s timeout.
        pub fn new() -> Self {
            Self::with_timeout(Duration::from_secs(10))
        }

        /// A tester with another timeout.
        pub fn with_timeout(timeout: Duration) -> Self {
            Self {
                agent: ureq::AgentBuilder::new()
                    .timeout(timeout)
                    .redirects(0)
                    .build(),
                allow_plain_loopback: true,
            }
        }

        /// Refuses plain HTTP even to loopback.
        pub fn https_only(mut self) -> Self {
            self.allow_plain_loopback = false;
            self
        }
    }

    impl CredentialTester for HttpTester {
        fn test(&self, ty: &CredentialType, credential: &Credential) -> TestOutcome {
            let Some(req) = ty.test_request(credential) else {
                return outcome(TestStatus::Error, "the type has no HTTP test request");
            };
            let url = req.url.expose_secret();
            match url_host(url) {
                Some(("https", _)) => {}
                Some(("http", host)) if self.allow_plain_loopback && is_loopback(host) => {}
                Some(("http", _)) => {
                    return outcome(
                        TestStatus::Error,
                        "refused: plain http to a non-loopback host",
                    )
                }
                _ => return outcome(TestStatus::Error, "the test URL is not an http(s) URL"),
            }
            let mut r = self.agent.request(&req.method, url);
            for (k, v) in &req.parts.headers {
                r = r.set(k.expose_secret(), v.expose_secret());
            }
            for (k, v) in &req.parts.query {
                r = r.query(k.expose_secret(), v.expose_secret());
            }
            if let Some((u, p)) = &req.parts.basic {
                let raw = Zeroizing::new(format!("{}:{}", u.expose_secret(), p.expose_secret()));
                let b64 = Zeroizing::new(
                    base64::engine::general_purpose::STANDARD.encode(raw.as_bytes()),
                );
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
                        serde_json::Value::Array(a) => {
                            seg.parse::<usize>().ok().and_then(|i| a.get(i))
                        }
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

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn hosts() {
            assert_eq!(
                url_host("https://a.example:8443/x"),
                Some(("https", "a.example"))
            );
            assert_eq!(
                url_host("http://u:p@127.0.0.1:9/"),
                Some(("http", "127.0.0.1"))
            );
            assert_eq!(url_host("http://[::1]:80/"), Some(("http", "::1")));
            assert!(is_loopback("127.0.0.1") && is_loopback("localhost") && is_loopback("::1"));
            assert!(!is_loopback("10.0.0.1") && !is_loopback("example.com"));
        }
    }
}

/// A tester that always answers the same (for tests and dry runs).
#[derive(Clone, Debug)]
pub struct FixedTester(pub TestOutcome);

impl CredentialTester for FixedTester {
    fn test(&self, _: &CredentialType, _: &Credential) -> TestOutcome {
        self.0.clone()
    }
}

impl Default for FixedTester {
    fn default() -> Self {
        Self(TestOutcome {
            status: TestStatus::Ok,
            message: "ok".into(),
        })
    }
}
