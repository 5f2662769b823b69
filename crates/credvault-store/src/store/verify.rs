//! Verifying a store: every row's record MAC, and the rows against the audit log (a row
//! rolled back, deleted or added outside the API). Also authenticating a vault's rows once
//! when it gains record MACs.

use std::collections::{BTreeMap, HashMap};

use credvault_audit::{Action, AuditEvent};
use credvault_envelope::KeyId;
use credvault_token::HmacSha256Key;
use serde::Serialize;

use super::integrity::{credential_mac, data_key_mac, mac_key};
use super::Store;
use crate::error::StoreError;
use crate::storage::{ListFilter, RecordMacs, StorageError};

/// The tenant field of vault-wide audit events.
pub(crate) const VAULT_WIDE: &str = "*";

impl Store {
    /// Gives every row written before record MACs existed its MAC, once, recorded as one
    /// `records_authenticated` event; a no-op (returning 0) when the storage says every row
    /// has one. [`Vault::open`](crate::Vault::open) calls it; call it after constructing a
    /// [`Store`] over an older database yourself. Until then such rows fail their check
    /// ([`StoreError::Integrity`]).
    ///
    /// What it MACs is whatever the rows hold at that moment: run it on a database you trust
    /// (a second `records_authenticated` event in the log means someone reset the flag, and
    /// `credvault verify` reports it).
    ///
    /// # Errors
    /// [`StoreError::MasterKey`], [`StoreError::Storage`], [`StoreError::Audit`].
    pub fn authenticate_records(&self, actor: &str) -> Result<usize, StoreError> {
        if self.storage.records_authenticated()? {
            return Ok(0);
        }
        let mut macs = RecordMacs::default();
        for t in self.storage.tenants()? {
            let mut keys: HashMap<KeyId, HmacSha256Key> = HashMap::new();
            for k in self.storage.data_keys(&t.id)? {
                let mk = mac_key(&self.unwrap_unchecked(&t.id, &k)?);
                if k.mac.is_empty() {
                    macs.keys
                        .push((t.id.clone(), k.key_id, data_key_mac(&mk, &t, &k)));
                }
                keys.insert(k.key_id, mk);
            }
            for c in self.storage.credentials(&t.id, &ListFilter::default())? {
                if c.mac.is_empty() {
                    let mk = keys.get(&c.key_id).ok_or(StoreError::Storage(
                        StorageError::UnknownKey { key_id: c.key_id },
                    ))?;
                    let mac = credential_mac(mk, &c);
                    macs.credentials
                        .push((t.id.clone(), c.id.clone(), c.version, mac));
                }
            }
        }
        let event = AuditEvent::new(
            VAULT_WIDE,
            actor,
            Action::Other(RECORDS_AUTHENTICATED.into()),
        );
        let n = self
            .storage
            .authenticate_records(&macs, &mut |c| self.audit.record_in(c, &event))?;
        self.cache.clear();
        Ok(n)
    }

    /// Switches a database whose stored audit head has no tag (written before heads were
    /// tagged) to tagged heads, once, recorded as one `head_authenticated` event whose head is
    /// stored tagged; from then on an untagged head is refused
    /// ([`Vault::open`](crate::Vault::open) calls this after checking the head). Returns
    /// whether it did anything.
    ///
    /// Like [`authenticate_records`](Self::authenticate_records), it trusts the database it
    /// finds: a second `head_authenticated` event in the log means someone reset the flag, and
    /// `credvault verify` reports it.
    ///
    /// # Errors
    /// [`StoreError::Storage`], [`StoreError::Audit`].
    pub fn authenticate_head(&self, actor: &str) -> Result<bool, StoreError> {
        if self.storage.heads_authenticated()? {
            return Ok(false);
        }
        let event = AuditEvent::new(VAULT_WIDE, actor, Action::Other(HEAD_AUTHENTICATED.into()));
        self.storage
            .authenticate_head(&mut |c| self.audit.record_in(c, &event))?;
        Ok(true)
    }
}

/// The action of the event [`Store::authenticate_head`] records.
const HEAD_AUTHENTICATED: &str = "head_authenticated";

/// The action of the event [`Store::authenticate_records`] records.
const RECORDS_AUTHENTICATED: &str = "records_authenticated";

/// What is wrong with one record ([`Finding`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum Problem {
    /// The row does not match its record MAC (or does not unwrap: a data key).
    Integrity,
    /// The row exists but the audit log never recorded its creation.
    NotInLog,
    /// The log recorded its deletion, yet the row is there (restored from a copy).
    DeletedButPresent,
    /// The log says the credential is live, but its row is gone (deleted outside the API).
    Missing,
    /// The row's version is not the last one the log recorded (an older copy restored, or a
    /// change the log never saw).
    VersionMismatch {
        /// The row's version.
        stored: u64,
        /// The last version the log recorded.
        logged: u64,
    },
    /// Rows or the audit head were authenticated more than once (the event the finding's id
    /// names, `records_authenticated` or `head_authenticated`, appears `count` times): someone
    /// reset the flag to have tampered rows MAC'd or an edited head tagged.
    RepeatedAuthentication {
        /// How many times.
        count: u64,
    },
}

/// One problem found by [`Store::verify`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Finding {
    /// The tenant (`*` for the vault as a whole).
    pub tenant: String,
    /// `credential`, `data key` or `vault`.
    pub record: &'static str,
    /// The record's id.
    pub id: String,
    /// What is wrong.
    pub problem: Problem,
}

/// The result of [`Store::verify`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StoreVerification {
    /// Tenants checked.
    pub tenants: u64,
    /// Data keys checked.
    pub data_keys: u64,
    /// Credentials checked.
    pub credentials: u64,
    /// Audit events read.
    pub events: u64,
    /// Everything found wrong, by tenant and id.
    pub findings: Vec<Finding>,
}

impl StoreVerification {
    /// Whether nothing was found.
    pub fn is_ok(&self) -> bool {
        self.findings.is_empty()
    }
}

/// What the log says of one credential.
#[derive(Clone, Copy)]
struct Logged {
    live: bool,
    version: u64,
}

impl Store {
    /// Checks every tenant's data keys and credentials against their record MACs, and the
    /// credentials against `events` (the whole audit log, in order): each live credential's
    /// version is the last one the log recorded, no row exists the log never created, no row
    /// the log deleted is back, none the log says is live is gone. Records one
    /// `store_verified` event (and an `integrity_failure` per row failing its MAC).
    ///
    /// # Errors
    /// [`StoreError::Storage`], [`StoreError::Audit`]; findings are not errors.
    pub fn verify(&self, events: &[AuditEvent]) -> Result<StoreVerification, StoreError> {
        let mut out = StoreVerification {
            events: events.len() as u64,
            ..StoreVerification::default()
        };
        let mut logged: BTreeMap<(String, String), Logged> = BTreeMap::new();
        let mut authentications = [(RECORDS_AUTHENTICATED, 0u64), (HEAD_AUTHENTICATED, 0u64)];
        for e in events {
            if let Action::Other(a) = &e.action {
                for (name, n) in &mut authentications {
                    if a == name {
                        *n += 1;
                    }
                }
            }
            let Some(id) = &e.resource.id else { continue };
            let key = (e.tenant.clone(), id.clone());
            let prev = logged.get(&key).copied();
            let next = match e.action {
                Action::Created => Logged {
                    live: true,
                    version: e.resource.version.unwrap_or(1),
                },
                Action::Updated => Logged {
                    live: true,
                    version: e
                        .resource
                        .version
                        .unwrap_or_else(|| prev.map_or(1, |p| p.version + 1)),
                },
                Action::Deleted => Logged {
                    live: false,
                    version: prev.map_or(0, |p| p.version),
                },
                _ => continue,
            };
            logged.insert(key, next);
        }
        for (name, count) in authentications {
            if count > 1 {
                out.findings.push(Finding {
                    tenant: VAULT_WIDE.into(),
                    record: "vault",
                    id: name.into(),
                    problem: Problem::RepeatedAuthentication { count },
                });
            }
        }
        let mut seen: std::collections::BTreeSet<(String, String)> = Default::default();
        for t in self.storage.tenants()? {
            out.tenants += 1;
            for k in self.storage.data_keys(&t.id)? {
                out.data_keys += 1;
                match self.unwrap_row(&t.id, &k) {
                    Ok(_) => {}
                    Err(StoreError::Integrity { .. }) => out.findings.push(Finding {
                        tenant: t.id.to_string(),
                        record: "data key",
                        id: k.key_id.to_string(),
                        problem: Problem::Integrity,
                    }),
                    Err(e) => return Err(e),
                }
            }
            for row in self.storage.credentials(&t.id, &ListFilter::default())? {
                out.credentials += 1;
                let key = (t.id.to_string(), row.id.to_string());
                seen.insert(key.clone());
                let finding = |problem| Finding {
                    tenant: t.id.to_string(),
                    record: "credential",
                    id: row.id.to_string(),
                    problem,
                };
                let version = row.version;
                match self.authenticated(row.clone(), "verify") {
                    Ok(_) => {}
                    Err(StoreError::Integrity { .. }) => {
                        out.findings.push(finding(Problem::Integrity));
                    }
                    Err(e) => return Err(e),
                }
                match logged.get(&key) {
                    None => out.findings.push(finding(Problem::NotInLog)),
                    Some(l) if !l.live => out.findings.push(finding(Problem::DeletedButPresent)),
                    Some(l) if l.version != version => {
                        out.findings.push(finding(Problem::VersionMismatch {
                            stored: version,
                            logged: l.version,
                        }));
                    }
                    Some(_) => {}
                }
            }
        }
        for ((tenant, id), l) in &logged {
            if l.live && !seen.contains(&(tenant.clone(), id.clone())) {
                out.findings.push(Finding {
                    tenant: tenant.clone(),
                    record: "credential",
                    id: id.clone(),
                    problem: Problem::Missing,
                });
            }
        }
        self.record(
            &AuditEvent::new(VAULT_WIDE, "verify", Action::Other("store_verified".into()))
                .with_outcome(if out.is_ok() {
                    credvault_audit::Outcome::Success
                } else {
                    credvault_audit::Outcome::Failure
                }),
        )?;
        Ok(out)
    }
}
