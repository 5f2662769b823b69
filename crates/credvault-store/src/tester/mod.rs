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

    /// The built-in testers this build has (HTTP with `http-tester`, PostgreSQL with
    /// `postgres`, MySQL, Redis, SMTP, SSH and AWS STS with their `*-tester` features),
    /// reaching public addresses only.
    pub fn with_defaults() -> Self {
        Self::with_defaults_allowing(&[])
    }

    /// The built-in testers, also allowed to reach these address classes (e.g.
    /// [`AddressClass::Loopback`] for a service on the vault's own host).
    pub fn with_defaults_allowing(#[allow(unused_variables)] classes: &[AddressClass]) -> Self {
        #[cfg(feature = "net")]
        {
            let out = classes
                .iter()
                .fold(Outbound::new(), |o, &class| o.allow(class));
            Self::with_outbound(&out)
        }
        #[cfg(not(feature = "net"))]
        Self::default()
    }

    /// The built-in testers this build has, each connecting where `out` allows.
    #[cfg(feature = "net")]
    pub fn with_outbound(#[allow(unused_variables)] out: &Outbound) -> Self {
        #[allow(unused_mut)]
        let mut r = Self::default();
        #[cfg(feature = "http-tester")]
        r.register(
            TestKind::Http,
            Arc::new(HttpTester::with_outbound(out.clone())),
        );
        #[cfg(feature = "postgres")]
        r.register(
            TestKind::Postgres,
            Arc::new(PostgresTester::new(out.clone())),
        );
        #[cfg(feature = "mysql-tester")]
        r.register(TestKind::Mysql, Arc::new(MysqlTester::new(out.clone())));
        #[cfg(feature = "redis-tester")]
        r.register(TestKind::Redis, Arc::new(RedisTester::new(out.clone())));
        #[cfg(feature = "smtp-tester")]
        r.register(TestKind::Smtp, Arc::new(SmtpTester::new(out.clone())));
        #[cfg(feature = "ssh-tester")]
        r.register(TestKind::Ssh, Arc::new(SshTester::new(out.clone())));
        #[cfg(feature = "aws-tester")]
        r.register(TestKind::AwsSts, Arc::new(AwsStsTester::new(out.clone())));
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
#[cfg(feature = "net")]
pub use outbound::Outbound;

#[cfg(feature = "aws-tester")]
pub use aws::AwsStsTester;
#[cfg(feature = "mysql-tester")]
pub use mysql::MysqlTester;
#[cfg(feature = "postgres")]
pub use postgres::PostgresTester;
#[cfg(feature = "redis-tester")]
pub use redis::RedisTester;
#[cfg(feature = "smtp-tester")]
pub use smtp::SmtpTester;
#[cfg(feature = "ssh-tester")]
pub use ssh::SshTester;

#[cfg(feature = "aws-tester")]
mod aws;
#[cfg(feature = "http-tester")]
mod http;
#[cfg(feature = "mysql-tester")]
mod mysql;
#[cfg(feature = "net")]
mod outbound;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis-tester")]
mod redis;
#[cfg(feature = "smtp-tester")]
mod smtp;
#[cfg(feature = "ssh-tester")]
mod ssh;

/// An outcome with a message (which must hold no secret).
#[cfg_attr(not(feature = "net"), allow(dead_code))] // only the network testers use it
pub(crate) fn outcome(status: TestStatus, message: impl Into<String>) -> TestOutcome {
    TestOutcome {
        status,
        message: message.into(),
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
