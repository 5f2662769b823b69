//! Testing credentials against their services, and checking that every sealed credential opens.

use credvault_audit::{Action, Details, Outcome};

use super::{resource, Scope};
use crate::error::StoreError;
use crate::fields::decode_secret_fields;
use crate::ids::CredentialId;
use crate::model::{Integrity, Progress, TestOutcome};
use crate::storage::{ListFilter, TestRecord};

impl Scope<'_> {
    /// Tests a credential against its service with the tester registered for its type's test
    /// kind; stores the result on the record and records `tested`.
    ///
    /// # Errors
    /// [`StoreError::Unsupported`] if the type has no test or no tester is registered for
    /// it; as [`reveal`](Self::reveal).
    pub fn test(&self, id: &CredentialId) -> Result<TestOutcome, StoreError> {
        let row = self.load_for_access(id)?;
        let ty = self.store.credential_type(&row.type_name)?;
        let kind = ty
            .definition()
            .test
            .as_ref()
            .map(|t| t.kind)
            .ok_or_else(|| {
                StoreError::Unsupported(format!("type {} has no test", row.type_name))
            })?;
        let tester = self.store.testers.get(kind).ok_or_else(|| {
            StoreError::Unsupported(format!("no tester for test kind {}", kind.as_str()))
        })?;
        let cred = self.store.credential_of(&row, &ty)?;
        let outcome = tester.test(&ty, &cred);
        drop(cred);
        let result = TestRecord {
            at: self.store.now(),
            status: outcome.status_str().into(),
            message: outcome.message.clone(),
        };
        let event = self
            .event(Action::Tested)
            .with_resource(resource(&row))
            .with_details(Details::Tested {
                status: outcome.status,
                message: outcome.message.clone(),
            });
        self.store
            .storage
            .record_test(&self.tenant, &row.id, &result, &mut |c| {
                self.store.audit.record_in(c, &event)
            })?;
        Ok(outcome)
    }

    /// Opens every credential of the tenant without returning anything: an integrity check
    /// after an incident, a restore or a crash. Records one `integrity_checked` event with the
    /// counts (and an `access_failed` per corrupt credential). Returns the corrupt ids.
    ///
    /// # Errors
    /// [`StoreError::Storage`], [`StoreError::Audit`].
    pub fn check_integrity(
        &self,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Integrity, StoreError> {
        let store = self.store;
        let rows = store
            .storage
            .credentials(&self.tenant, &ListFilter::default())?;
        let total = rows.len() as u64;
        let mut corrupt = Vec::new();
        for (i, row) in rows.into_iter().enumerate() {
            let id = row.id.to_string();
            // A row failing its MAC is recorded as `integrity_failure` by the check.
            match store.authenticated(row, &self.actor) {
                Ok(row) => {
                    let ok = store
                        .open_row(&row)
                        .ok()
                        .is_some_and(|pt| decode_secret_fields(pt.expose_secret()).is_ok());
                    if !ok {
                        self.failed(Action::AccessFailed, &row, "sealed data does not open");
                        corrupt.push(id);
                    }
                }
                Err(StoreError::Integrity { .. }) => corrupt.push(id),
                Err(e) => return Err(e),
            }
            if i % 256 == 255 {
                progress(Progress {
                    done: i as u64 + 1,
                    total,
                });
            }
        }
        progress(Progress { done: total, total });
        store.record(
            &self
                .event(Action::Other("integrity_checked".into()))
                .with_outcome(if corrupt.is_empty() {
                    Outcome::Success
                } else {
                    Outcome::Failure
                }),
        )?;
        Ok(Integrity {
            checked: total,
            corrupt,
        })
    }
}
