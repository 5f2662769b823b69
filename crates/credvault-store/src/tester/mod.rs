//! Credential testing: a [`CredentialTester`] per test kind, and an HTTP tester driven by the
//! type's declarative `test` and `authenticate` blocks.

use std::collections::HashMap;
use std::sync::Arc;

use credvault_audit::TestStatus;
use credvault_schema::{Credential, CredentialType, TestKind};

use crate::model::TestOutcome;
use crate::net::AddressClass;

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

    /// The built-in testers: HTTP (feature `http-tester`), reaching public addresses only.
    pub fn with_defaults() -> Self {
        Self::with_defaults_allowing(&[])
    }

    /// The built-in testers, the HTTP tester also allowed to reach these address classes
    /// (e.g. [`AddressClass::Loopback`] for a service on the vault's own host).
    pub fn with_defaults_allowing(#[allow(unused_variables)] classes: &[AddressClass]) -> Self {
        #[allow(unused_mut)]
        let mut r = Self::default();
        #[cfg(feature = "http-tester")]
        {
            let tester = classes
                .iter()
                .fold(HttpTester::new(), |t, &class| t.allow(class));
            r.register(TestKind::Http, Arc::new(tester));
        }
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
mod http;

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
