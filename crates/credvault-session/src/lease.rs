//! Leases: who may use a credential's account now.

use std::time::{Duration, Instant};

use crate::sql::Tx;
use crate::vals;
use credvault_store::audit::{Action, AuditEvent, Details};
use credvault_store::{CredentialId, Scope, TenantId};
use ring::rand::SecureRandom;

use crate::db::event_like;
use crate::{SessionConfig, SessionError, Sessions};

/// Shortest lease lifetime without a heartbeat.
pub const MIN_LEASE_TTL: Duration = Duration::from_millis(200);
/// Longest lease lifetime without a heartbeat.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(24 * 3600);

/// What a lease is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeaseKind {
    /// Using the account's session (an automation's run): shared up to the credential's
    /// limit.
    Run,
    /// Logging in: with the credential's login lock (the default), alone — no other lease of
    /// either kind is held meanwhile.
    Login,
}

impl LeaseKind {
    /// As stored and recorded: `run`, `login`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Run => "run",
            Self::Login => "login",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "run" => Some(Self::Run),
            "login" => Some(Self::Login),
            _ => None,
        }
    }
}

/// A held lease. Renew it ([`renew`](Self::renew)) more often than its lifetime, and
/// [`release`](Self::release) it when done; dropping it releases it too (best effort). A holder
/// that stops renewing (it crashed) loses the lease when its lifetime runs out, and the next
/// waiter proceeds.
#[derive(Debug)]
pub struct Lease<'a> {
    sessions: &'a Sessions,
    tenant: TenantId,
    credential: CredentialId,
    id: String,
    kind: LeaseKind,
    ttl_ms: i64,
    expires_at: i64,
    template: AuditEvent,
    released: bool,
}

/// A lease row's authenticated values.
struct LeaseRecord<'a> {
    tenant: &'a str,
    credential: &'a str,
    id: &'a str,
    kind: &'a str,
    holder: &'a str,
    acquired_at: i64,
    expires_at: i64,
}

struct Held {
    id: String,
    kind: Option<LeaseKind>,
}

fn random_id() -> Result<String, SessionError> {
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| SessionError::Database("the system random generator failed".into()))?;
    Ok(hex::encode(b))
}

fn lease_details(id: &str, kind: LeaseKind, reason: Option<&str>) -> Details {
    Details::Session {
        profile: None,
        version: None,
        lease: Some(id.to_owned()),
        mode: Some(kind.as_str().to_owned()),
        reason: reason.map(str::to_owned),
    }
}

/// Whether a lease of `kind` may be granted beside `held`.
fn compatible(kind: LeaseKind, held: &[Held], cfg: &SessionConfig) -> bool {
    let exclusive = |k: Option<LeaseKind>| cfg.login_lock && k == Some(LeaseKind::Login);
    if kind == LeaseKind::Login && cfg.login_lock {
        return held.is_empty();
    }
    !held.iter().any(|h| exclusive(h.kind)) && (held.len() as u64) < cfg.run_limit()
}

impl Sessions {
    fn lease_mac(&self, r: &LeaseRecord<'_>) -> Vec<u8> {
        self.key().mac(
            "lease",
            &[
                r.tenant.as_bytes(),
                r.credential.as_bytes(),
                r.id.as_bytes(),
                r.kind.as_bytes(),
                r.holder.as_bytes(),
                &r.acquired_at.to_be_bytes(),
                &r.expires_at.to_be_bytes(),
            ],
        )
    }

    fn waiter_mac(
        &self,
        seq: i64,
        id: &str,
        t: &str,
        cred: &str,
        kind: &str,
        expires_at: i64,
    ) -> Vec<u8> {
        self.key().mac(
            "lease waiter",
            &[
                &seq.to_be_bytes(),
                id.as_bytes(),
                t.as_bytes(),
                cred.as_bytes(),
                kind.as_bytes(),
                &expires_at.to_be_bytes(),
            ],
        )
    }

    /// Takes a lease of `kind` on credential `id`, lasting `ttl` from each heartbeat, waiting
    /// at most `wait` for it. Waiters are served in arrival order (first in, first out), so a
    /// login is not starved by a stream of runs. Recorded as `lease_acquired`; leases found
    /// expired on the way as `lease_expired`.
    ///
    /// # Errors
    /// [`SessionError::WaitTimedOut`], [`SessionError::Invalid`] (`ttl` out of range),
    /// [`SessionError::Integrity`] (a lease record changed outside the vault: no lease is
    /// granted while it is there), [`SessionError::Store`], [`SessionError::Database`].
    pub fn acquire(
        &self,
        scope: &Scope<'_>,
        id: &CredentialId,
        kind: LeaseKind,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease<'_>, SessionError> {
        let ttl_ms = check_ttl(ttl)?;
        let template = scope.credential_event(id, Action::Other("lease_acquired".into()))?;
        let t = scope.tenant_id().as_str().to_owned();
        let cred = id.as_str().to_owned();
        let me = random_id()?;
        let holder = format!("{}:{}", scope_actor(&template), std::process::id());
        // A waiter that stops polling (it crashed) drops out of the queue after this.
        let grace =
            i64::try_from((self.poll * 20).max(Duration::from_secs(2)).as_millis()).unwrap_or(2000);
        let started = Instant::now();
        let mut seq: Option<i64> = None;
        let mut pause = Duration::from_millis(2);
        enum Step {
            Granted(i64),
            Wait(i64),
            TimedOut,
        }
        loop {
            let step = self.db().write(|tx| -> Result<Step, SessionError> {
                let now = self.now();
                // Expired leases of this credential go first (recorded), then stale waiters.
                let expired = tx.rows(
                    "SELECT id, kind FROM leases WHERE tenant = $1 AND credential = $2 AND expires_at <= $3",
                    vals![t, cred, now],
                )?;
                for r in expired {
                    let (lid, k): (String, String) = (r.get(0)?, r.get(1)?);
                    tx.exec("DELETE FROM leases WHERE id = $1", vals![lid])?;
                    let k = LeaseKind::parse(&k).unwrap_or(LeaseKind::Run);
                    self.store().record_event(&event_like(
                        &template,
                        "lease_expired",
                        lease_details(&lid, k, Some("no heartbeat within its lifetime")),
                    ))?;
                }
                tx.exec(
                    "DELETE FROM lease_waiters WHERE tenant = $1 AND credential = $2 AND expires_at <= $3 AND id <> $4",
                    vals![t, cred, now, me],
                )?;
                let waiter_expires = now.saturating_add(grace);
                let renewed = match seq {
                    Some(s) => {
                        tx.exec(
                            "UPDATE lease_waiters SET expires_at = $2, mac = $3 WHERE id = $1",
                            vals![
                                me,
                                waiter_expires,
                                self.waiter_mac(s, &me, &t, &cred, kind.as_str(), waiter_expires)
                            ],
                        )? == 1
                    }
                    None => false,
                };
                let my_seq = match seq {
                    Some(s) if renewed => s,
                    _ => {
                        // First round (or dropped from the queue after a long stall: back in line).
                        let r = tx
                            .row(
                                "INSERT INTO lease_waiters (id, tenant, credential, kind, expires_at, mac)
                                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
                                vals![me, t, cred, kind.as_str(), waiter_expires, Vec::<u8>::new()],
                            )?
                            .ok_or_else(|| SessionError::Database("no ticket returned".into()))?;
                        let s: i64 = r.get(0)?;
                        tx.exec(
                            "UPDATE lease_waiters SET mac = $2 WHERE id = $1",
                            vals![
                                me,
                                self.waiter_mac(s, &me, &t, &cred, kind.as_str(), waiter_expires)
                            ],
                        )?;
                        s
                    }
                };
                let held = self.held(tx, &t, &cred)?;
                let first = self.first_waiter(tx, &t, &cred)?;
                let cfg = self.config_in(tx, scope.tenant_id(), id)?;
                if first.as_deref() == Some(me.as_str()) && compatible(kind, &held, &cfg) {
                    let expires_at = now.saturating_add(ttl_ms);
                    tx.exec("DELETE FROM lease_waiters WHERE id = $1", vals![me])?;
                    let mac = self.lease_mac(&LeaseRecord {
                        tenant: &t,
                        credential: &cred,
                        id: &me,
                        kind: kind.as_str(),
                        holder: &holder,
                        acquired_at: now,
                        expires_at,
                    });
                    tx.exec(
                        "INSERT INTO leases (id, tenant, credential, kind, holder, acquired_at, expires_at, mac)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        vals![me, t, cred, kind.as_str(), holder, now, expires_at, mac],
                    )?;
                    self.store().record_event(&event_like(
                        &template,
                        "lease_acquired",
                        lease_details(&me, kind, None),
                    ))?;
                    return Ok(Step::Granted(expires_at));
                }
                if started.elapsed() >= wait {
                    tx.exec("DELETE FROM lease_waiters WHERE id = $1", vals![me])?;
                    return Ok(Step::TimedOut);
                }
                Ok(Step::Wait(my_seq))
            })?;
            match step {
                Step::Granted(expires_at) => {
                    return Ok(Lease {
                        sessions: self,
                        tenant: scope.tenant_id().clone(),
                        credential: id.clone(),
                        id: me,
                        kind,
                        ttl_ms,
                        expires_at,
                        template,
                        released: false,
                    })
                }
                Step::TimedOut => {
                    return Err(SessionError::WaitTimedOut {
                        kind: kind.as_str(),
                        waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    })
                }
                Step::Wait(s) => seq = Some(s),
            }
            let left = wait.saturating_sub(started.elapsed());
            std::thread::sleep(pause.min(left).max(Duration::from_millis(1)));
            pause = (pause * 2).min(self.poll);
        }
    }

    /// The live leases of a credential, each authenticated.
    fn held(&self, tx: &mut dyn Tx, t: &str, cred: &str) -> Result<Vec<Held>, SessionError> {
        let rows = tx.rows(
            "SELECT id, kind, holder, acquired_at, expires_at, mac FROM leases
             WHERE tenant = $1 AND credential = $2",
            vals![t, cred],
        )?;
        let mut out = Vec::new();
        for r in rows {
            let (id, kind, holder): (String, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
            let (acquired_at, expires_at, mac): (i64, i64, Vec<u8>) =
                (r.get(3)?, r.get(4)?, r.get(5)?);
            let want = self.lease_mac(&LeaseRecord {
                tenant: t,
                credential: cred,
                id: &id,
                kind: &kind,
                holder: &holder,
                acquired_at,
                expires_at,
            });
            if !self.key().verify_tag(&want, &mac) {
                return Err(SessionError::Integrity { record: "lease" });
            }
            out.push(Held {
                kind: LeaseKind::parse(&kind),
                id,
            });
        }
        Ok(out)
    }

    /// The id of the first live waiter in line for a credential, authenticated.
    fn first_waiter(
        &self,
        tx: &mut dyn Tx,
        t: &str,
        cred: &str,
    ) -> Result<Option<String>, SessionError> {
        let Some(r) = tx.row(
            "SELECT seq, id, kind, expires_at, mac FROM lease_waiters
             WHERE tenant = $1 AND credential = $2 ORDER BY seq LIMIT 1",
            vals![t, cred],
        )?
        else {
            return Ok(None);
        };
        let (seq, id, kind): (i64, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
        let (expires_at, mac): (i64, Vec<u8>) = (r.get(3)?, r.get(4)?);
        if !self
            .key()
            .verify_tag(&self.waiter_mac(seq, &id, t, cred, &kind, expires_at), &mac)
        {
            return Err(SessionError::Integrity {
                record: "lease waiter",
            });
        }
        Ok(Some(id))
    }

    /// The ids and kinds of a credential's live leases (for `credvault lease --list` and
    /// tests).
    ///
    /// # Errors
    /// [`SessionError::Integrity`], [`SessionError::Database`].
    pub fn leases(
        &self,
        scope: &Scope<'_>,
        id: &CredentialId,
    ) -> Result<Vec<(String, LeaseKind)>, SessionError> {
        let now = self.now();
        let t = scope.tenant_id().as_str();
        self.db().read(|tx| {
            let mut expired = Vec::new();
            for r in tx.rows(
                "SELECT id FROM leases WHERE tenant = $1 AND credential = $2 AND expires_at <= $3",
                vals![t, id.as_str(), now],
            )? {
                expired.push(r.get::<String>(0)?);
            }
            let mut out = Vec::new();
            for h in self.held(tx, t, id.as_str())? {
                if let (false, Some(k)) = (expired.contains(&h.id), h.kind) {
                    out.push((h.id, k));
                }
            }
            Ok(out)
        })
    }
}

impl Sessions {
    /// Extends lease `lease_id` (of `tenant`'s `credential`) to `ttl_ms` from now; the new
    /// expiry.
    fn renew_in(&self, t: &str, c: &str, lease_id: &str, ttl_ms: i64) -> Result<i64, SessionError> {
        let lost = || SessionError::LeaseLost {
            id: lease_id.to_owned(),
        };
        self.db().write(|tx| {
            let now = self.now();
            let Some(r) = tx.row(
                "SELECT kind, holder, acquired_at, expires_at, mac FROM leases
                 WHERE id = $1 AND tenant = $2 AND credential = $3",
                vals![lease_id, t, c],
            )?
            else {
                return Err(lost());
            };
            let (kind, holder): (String, String) = (r.get(0)?, r.get(1)?);
            let (acquired_at, expires_at, mac): (i64, i64, Vec<u8>) =
                (r.get(2)?, r.get(3)?, r.get(4)?);
            let record = |expires_at| LeaseRecord {
                tenant: t,
                credential: c,
                id: lease_id,
                kind: &kind,
                holder: &holder,
                acquired_at,
                expires_at,
            };
            if !self
                .key()
                .verify_tag(&self.lease_mac(&record(expires_at)), &mac)
            {
                return Err(SessionError::Integrity { record: "lease" });
            }
            if expires_at <= now {
                return Err(lost());
            }
            let next = now.saturating_add(ttl_ms);
            tx.exec(
                "UPDATE leases SET expires_at = $2, mac = $3 WHERE id = $1",
                vals![lease_id, next, self.lease_mac(&record(next))],
            )?;
            Ok(next)
        })
    }

    /// The heartbeat of a kept lease ([`Lease::keep`]) by its id: extends it to `ttl` from
    /// now; the new expiry (Unix ms).
    ///
    /// # Errors
    /// [`SessionError::LeaseLost`] (expired, released, or not a lease of this credential in
    /// the scope's tenant), [`SessionError::Invalid`] (`ttl` out of range),
    /// [`SessionError::Integrity`], [`SessionError::Database`].
    pub fn renew_lease(
        &self,
        scope: &Scope<'_>,
        id: &CredentialId,
        lease_id: &str,
        ttl: Duration,
    ) -> Result<i64, SessionError> {
        let ttl_ms = check_ttl(ttl)?;
        self.renew_in(scope.tenant_id().as_str(), id.as_str(), lease_id, ttl_ms)
    }

    /// Gives back a kept lease by its id (recorded as `lease_released`).
    ///
    /// # Errors
    /// [`SessionError::LeaseLost`] (expired, released, or not a lease of this credential in
    /// the scope's tenant), [`SessionError::Store`], [`SessionError::Database`].
    pub fn release_lease(
        &self,
        scope: &Scope<'_>,
        id: &CredentialId,
        lease_id: &str,
    ) -> Result<(), SessionError> {
        let (t, now) = (scope.tenant_id().as_str(), self.now());
        let (n, kind) = self.db().write(|tx| -> Result<(u64, Option<String>), SessionError> {
            let kind = tx
                .row(
                    "SELECT kind FROM leases WHERE id = $1 AND tenant = $2 AND credential = $3 AND expires_at > $4",
                    vals![lease_id, t, id.as_str(), now],
                )?
                .map(|r| r.get::<String>(0))
                .transpose()?;
            let n = tx.exec(
                "DELETE FROM leases WHERE id = $1 AND tenant = $2 AND credential = $3 AND expires_at > $4",
                vals![lease_id, t, id.as_str(), now],
            )?;
            Ok((n, kind))
        })?;
        let (1, Some(kind)) = (n, kind.as_deref().and_then(LeaseKind::parse)) else {
            return Err(SessionError::LeaseLost {
                id: lease_id.to_owned(),
            });
        };
        scope.record(
            id,
            Action::Other("lease_released".into()),
            Some(lease_details(lease_id, kind, None)),
        )?;
        Ok(())
    }
}

fn check_ttl(ttl: Duration) -> Result<i64, SessionError> {
    if !(MIN_LEASE_TTL..=MAX_LEASE_TTL).contains(&ttl) {
        return Err(SessionError::Invalid {
            what: "lease lifetime",
            reason: "must be between 200 ms and 24 h".into(),
        });
    }
    Ok(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

fn scope_actor(e: &AuditEvent) -> &str {
    e.actor.as_str()
}

impl Lease<'_> {
    /// The lease's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its kind.
    pub fn kind(&self) -> LeaseKind {
        self.kind
    }

    /// When it expires without another heartbeat (Unix ms, the store's clock).
    pub fn expires_at(&self) -> i64 {
        self.expires_at
    }

    /// The heartbeat: extends the lease by its lifetime from now.
    ///
    /// # Errors
    /// [`SessionError::LeaseLost`] when it expired meanwhile (another holder may have it now:
    /// stop using the account), [`SessionError::Database`].
    pub fn renew(&mut self) -> Result<(), SessionError> {
        self.expires_at = self.sessions.renew_in(
            self.tenant.as_str(),
            self.credential.as_str(),
            &self.id,
            self.ttl_ms,
        )?;
        Ok(())
    }

    /// Keeps the lease held after this value is dropped, and returns its id and expiry: for a
    /// holder in another process (a gateway's client), which renews and releases it by id
    /// ([`Sessions::renew_lease`], [`Sessions::release_lease`]).
    pub fn keep(mut self) -> (String, i64) {
        self.released = true;
        (std::mem::take(&mut self.id), self.expires_at)
    }

    /// Gives the lease back (recorded as `lease_released`); the next waiter proceeds.
    ///
    /// # Errors
    /// [`SessionError::LeaseLost`] when it had expired already, [`SessionError::Store`] (the
    /// event not recorded: the lease is still released), [`SessionError::Database`].
    pub fn release(mut self) -> Result<(), SessionError> {
        self.released = true;
        self.give_back()
    }

    fn give_back(&self) -> Result<(), SessionError> {
        let s = self.sessions;
        let now = s.now();
        let n = s.db().write(|tx| -> Result<u64, SessionError> {
            Ok(tx.exec(
                "DELETE FROM leases WHERE id = $1 AND expires_at > $2",
                vals![self.id, now],
            )?)
        })?;
        if n == 0 {
            return Err(SessionError::LeaseLost {
                id: self.id.clone(),
            });
        }
        s.store().record_event(&event_like(
            &self.template,
            "lease_released",
            lease_details(&self.id, self.kind, None),
        ))?;
        Ok(())
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if !self.released {
            let _ = self.give_back();
        }
    }
}
