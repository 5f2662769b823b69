//! Where a tester may connect, and the fields every protocol tester reads.

// Each protocol tester uses some of these helpers: a build with only some testers leaves the
// others unused.
#![cfg_attr(not(feature = "testers"), allow(dead_code))]

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use credvault_audit::TestStatus;
use credvault_schema::{Credential, FieldValue};

use super::{outcome, TestOutcome};
use crate::net::{
    all_loopback, resolve_checked, AddressClass, NetworkPolicy, Resolve, SystemResolver,
};

/// Where testers may connect on a credential's behalf, and how long they wait.
///
/// A host comes from stored fields, so whoever can create a credential chooses it. The host
/// is resolved once, every address is checked against the [`NetworkPolicy`] (default: public
/// addresses only), and the tester connects to those addresses and no others: a DNS answer
/// cannot change between the check and the connection. Where a client library resolves the
/// name itself (Redis over TLS), the server's certificate must then match the name, which an
/// address the name was rebound to cannot present.
#[derive(Clone)]
pub struct Outbound {
    pub(crate) policy: NetworkPolicy,
    pub(crate) resolver: Arc<dyn Resolve>,
    pub(crate) timeout: Duration,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("policy", &self.policy)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Default for Outbound {
    fn default() -> Self {
        Self::new()
    }
}

impl Outbound {
    /// Public addresses only, a 10 s timeout, the system resolver.
    pub fn new() -> Self {
        Self {
            policy: NetworkPolicy::public_only(),
            resolver: Arc::new(SystemResolver),
            timeout: Duration::from_secs(10),
        }
    }

    /// Also lets testers reach `class` (loopback, private or link-local; reserved addresses
    /// are never reached). An explicit vault setting: `credvault test --allow-network`.
    #[must_use]
    pub fn allow(mut self, class: AddressClass) -> Self {
        self.policy = self.policy.allow(class);
        self
    }

    /// Uses this network policy.
    #[must_use]
    pub fn with_policy(mut self, policy: NetworkPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Resolves host names with `resolver` instead of the system's.
    #[must_use]
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolve>) -> Self {
        self.resolver = resolver;
        self
    }

    /// Waits this long to connect, and for each answer.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Refuses plain `http://` even to loopback.
    #[must_use]
    pub fn https_only(mut self) -> Self {
        self.policy = self.policy.https_only();
        self
    }

    /// The checked addresses of `host:port`, or the outcome that refuses it.
    pub(crate) fn addrs(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, TestOutcome> {
        resolve_checked(host, port, &self.policy, &*self.resolver)
            .map_err(|e| outcome(TestStatus::Error, format!("refused: {e}")))
    }

    /// Refuses a login sent in the clear anywhere but to the vault's own host.
    pub(crate) fn clear_text_allowed(addrs: &[SocketAddr]) -> Result<(), TestOutcome> {
        if all_loopback(addrs) {
            Ok(())
        } else {
            Err(outcome(
                TestStatus::Error,
                "refused: a login without TLS is only sent to loopback",
            ))
        }
    }

    /// A TCP connection to the first of `addrs` that answers, with read and write timeouts.
    pub(crate) fn connect(&self, addrs: &[SocketAddr]) -> io::Result<TcpStream> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for a in addrs {
            match TcpStream::connect_timeout(a, self.timeout) {
                Ok(s) => {
                    s.set_read_timeout(Some(self.timeout))?;
                    s.set_write_timeout(Some(self.timeout))?;
                    s.set_nodelay(true)?;
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// The fields a protocol tester reads, each missing one an `error` outcome naming it.
pub(crate) struct Fields<'a>(pub(crate) &'a Credential);

impl<'a> Fields<'a> {
    /// A text field that must be set.
    pub(crate) fn text(&self, key: &str) -> Result<&'a str, TestOutcome> {
        self.opt_text(key).ok_or_else(|| missing(key))
    }

    /// A text field, if set.
    pub(crate) fn opt_text(&self, key: &str) -> Option<&'a str> {
        match self.0.get(key)? {
            FieldValue::Text(t) if !t.is_empty() => Some(t),
            _ => None,
        }
    }

    /// A secret field that must be set.
    pub(crate) fn secret(&self, key: &str) -> Result<&'a str, TestOutcome> {
        self.opt_secret(key).ok_or_else(|| missing(key))
    }

    /// A secret field, if set.
    pub(crate) fn opt_secret(&self, key: &str) -> Option<&'a str> {
        self.0.expose_secret(key).filter(|s| !s.is_empty())
    }

    /// A port field, `default` when unset.
    pub(crate) fn port(&self, key: &str, default: u16) -> Result<u16, TestOutcome> {
        match self.0.get(key) {
            None => Ok(default),
            Some(FieldValue::Integer(n)) => u16::try_from(n)
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| outcome(TestStatus::Error, format!("field {key}: not a port"))),
            Some(_) => Err(outcome(
                TestStatus::Error,
                format!("field {key}: not a number"),
            )),
        }
    }

    /// A whole number field, `default` when unset.
    pub(crate) fn integer(&self, key: &str, default: i64) -> i64 {
        match self.0.get(key) {
            Some(FieldValue::Integer(n)) => n,
            _ => default,
        }
    }

    /// A boolean field, `default` when unset.
    pub(crate) fn boolean(&self, key: &str, default: bool) -> bool {
        match self.0.get(key) {
            Some(FieldValue::Bool(b)) => b,
            _ => default,
        }
    }
}

fn missing(key: &str) -> TestOutcome {
    outcome(TestStatus::Error, format!("field {key} is not set"))
}

/// Runs `f`, turning its early-return outcome into the result.
pub(crate) fn run(f: impl FnOnce() -> Result<TestOutcome, TestOutcome>) -> TestOutcome {
    f().unwrap_or_else(|o| o)
}
