//! The fallback-login flow: saved state when valid, otherwise one login under the login lease.

use std::cell::RefCell;

use credvault_store::audit::{Action, Details};
use credvault_store::{CredentialId, Revealed, Scope, TotpCode};

use crate::db::session_details;
use crate::{BrowserState, Lease, LeaseKind, SessionError, Sessions};

/// What [`Sessions::with_session`] hands back.
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionOutcome {
    /// The saved state was valid: no login happened.
    Restored(BrowserState),
    /// The login callback ran and its state was saved.
    LoggedIn(BrowserState),
}

impl SessionOutcome {
    /// The state, either way.
    pub fn state(&self) -> &BrowserState {
        match self {
            Self::Restored(s) | Self::LoggedIn(s) => s,
        }
    }

    /// Whether the login callback ran.
    pub fn logged_in(&self) -> bool {
        matches!(self, Self::LoggedIn(_))
    }
}

/// What a login callback may use: the credential's fields and TOTP codes, each access
/// recorded as usual, and the login lease's heartbeat.
pub struct LoginContext<'a, 's> {
    scope: &'a Scope<'s>,
    id: &'a CredentialId,
    heartbeat: &'a dyn Fn() -> Result<(), SessionError>,
}

impl std::fmt::Debug for LoginContext<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginContext")
            .field("credential", self.id)
            .finish_non_exhaustive()
    }
}

impl LoginContext<'_, '_> {
    /// The credential being logged in with.
    pub fn credential(&self) -> &CredentialId {
        self.id
    }

    /// Reveals the named fields (every usable secret field: none named) for the login, as
    /// [`Scope::reveal_many`] does: `use-only` fields are allowed, `write-only` never; the
    /// access is recorded with service `login`.
    ///
    /// # Errors
    /// As [`Scope::reveal_many`].
    pub fn reveal(&self, fields: &[&str]) -> Result<Revealed, SessionError> {
        let fields = fields.iter().map(|f| (*f).to_owned()).collect();
        let mut out = self
            .scope
            .reveal_many(&[(self.id.clone(), fields)], Some("login"))?;
        out.pop()
            .ok_or_else(|| SessionError::Database("no fields revealed".into()))
    }

    /// The credential's current TOTP code (its authenticator key never leaves the vault).
    ///
    /// # Errors
    /// As [`Scope::totp_code`].
    pub fn totp_code(&self) -> Result<TotpCode, SessionError> {
        Ok(self.scope.totp_code(self.id, Some("login"))?)
    }

    /// Extends the login lease (call it during a long login).
    ///
    /// # Errors
    /// [`SessionError::LeaseLost`]: stop, another process may be logging in.
    pub fn heartbeat(&self) -> Result<(), SessionError> {
        (self.heartbeat)()
    }
}

/// The login callback's error: its message is returned to the caller of
/// [`Sessions::with_session`], never recorded.
pub type LoginError = Box<dyn std::error::Error + Send + Sync>;

impl Sessions {
    /// The fallback-login flow as one call: credential `id`'s saved state for `profile` when
    /// it is valid (`session_restored`); otherwise takes the login lease, looks again (another
    /// process may have logged in meanwhile), calls `login` (`login_started`), saves the state
    /// it returns as a new login (`session_saved`, `login_succeeded`) or records
    /// `login_failed`, and releases the lease.
    ///
    /// # Errors
    /// [`SessionError::Login`] with the callback's message (nothing saved),
    /// [`SessionError::WaitTimedOut`] (another login held the lease too long), and those of
    /// [`load`](Self::load), [`save`](Self::save) and [`acquire`](Self::acquire).
    pub fn with_session<F>(
        &self,
        scope: &Scope<'_>,
        id: &CredentialId,
        profile: &str,
        login: F,
    ) -> Result<SessionOutcome, SessionError>
    where
        F: FnOnce(&LoginContext<'_, '_>) -> Result<BrowserState, LoginError>,
    {
        if let Some(s) = self.load(scope, id, profile)? {
            return Ok(SessionOutcome::Restored(s));
        }
        let lease = self.acquire(scope, id, LeaseKind::Login, self.login_ttl, self.login_wait)?;
        let lease = RefCell::new(lease);
        let outcome = self.login_under(scope, id, profile, &lease, login);
        let released = lease.into_inner().release();
        let outcome = outcome?;
        // The state is saved; a lease that expired meanwhile changes nothing for it.
        match released {
            Ok(()) | Err(SessionError::LeaseLost { .. }) => Ok(outcome),
            Err(e) => Err(e),
        }
    }

    fn login_under<F>(
        &self,
        scope: &Scope<'_>,
        id: &CredentialId,
        profile: &str,
        lease: &RefCell<Lease<'_>>,
        login: F,
    ) -> Result<SessionOutcome, SessionError>
    where
        F: FnOnce(&LoginContext<'_, '_>) -> Result<BrowserState, LoginError>,
    {
        if let Some(s) = self.load(scope, id, profile)? {
            return Ok(SessionOutcome::Restored(s));
        }
        let details = || Some(session_details(profile, None));
        scope.record(id, Action::Other("login_started".into()), details())?;
        let heartbeat = || lease.borrow_mut().renew();
        let ctx = LoginContext {
            scope,
            id,
            heartbeat: &heartbeat,
        };
        let state = match login(&ctx) {
            Ok(s) => s,
            Err(e) => {
                let mut d = session_details(profile, None);
                if let Details::Session { reason, .. } = &mut d {
                    *reason = Some("the login callback failed".into());
                }
                scope.record(id, Action::Other("login_failed".into()), Some(d))?;
                return Err(SessionError::Login(e.to_string()));
            }
        };
        let info = self.save_state(scope, id, profile, &state, true)?;
        scope.record(
            id,
            Action::Other("login_succeeded".into()),
            Some(session_details(profile, Some(info.version))),
        )?;
        Ok(SessionOutcome::LoggedIn(state))
    }
}
