//! KV v2 at `secret/`, with versions (decision 0025).
//!
//! A secret at `PATH` is the credential named `PATH` of type `kv_secret` in the `production`
//! environment. Its fields:
//! - `data` (secret): the current version's pairs, one JSON object;
//! - `history` (secret): older versions' pairs by version number (`{"3": {...}}`);
//! - `versions` (public, under the record MAC like every field): the version record — the
//!   current number, each version's creation and deletion times and destroyed flag, and the
//!   settings `max_versions`, `cas_required`, `custom_metadata` (docs/formats.md).
//!
//! A write moves the current pairs into `history` and writes the new ones, in one update that
//! expects the credential's version as read (a concurrent write is retried on the new state,
//! so no version is lost; a `cas` that no longer matches is refused). Versions beyond
//! `max_versions` (default 10, as Vault's) are removed oldest first, as Vault removes them, and
//! so are older versions whose pairs no longer fit in the store's field limit (64 KiB of
//! history): `oldest_version` in the metadata says which are left. Soft delete and undelete
//! only change the version record; destroy removes a version's pairs for good. A secret
//! written before versions were kept has one version, numbered as its credential version was
//! reported, and gains the record on its next change.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use credvault_store::{
    CredentialInfo, CredentialUpdate, NewCredential, Scope, StoreError, SECRET_MARKER,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::apikey::ApiScope;
use crate::error::ApiError;
use crate::gateway::{blocking, json_body, scope, Caller, Shared};
use crate::vault_api::{
    envelope, kv_path, no_store, time_text, vault_error, KV, KV_ENVIRONMENT, KV_TYPE,
};

const DATA: &str = "data";
const HISTORY: &str = "history";
const RECORD: &str = "versions";
/// Versions kept when `max_versions` is 0 (Vault's default).
pub(crate) const DEFAULT_MAX_VERSIONS: u32 = 10;
/// Bytes of older versions' pairs kept: the store's limit for one field.
const HISTORY_BUDGET: usize = credvault_store::MAX_FIELD_VALUE_LEN;
/// Most entries in `custom_metadata` (Vault's limit), and their sizes.
const MAX_CUSTOM: usize = 64;
const MAX_CUSTOM_KEY: usize = 128;
const MAX_CUSTOM_VALUE: usize = 512;
/// Writes retried when another writer changed the secret in between.
const WRITE_ATTEMPTS: usize = 16;

/// One version's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VersionInfo {
    /// Unix ms.
    created: i64,
    /// Unix ms of a soft delete.
    deleted: Option<i64>,
    destroyed: bool,
}

/// The version record (`versions` field).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Record {
    current: u64,
    max_versions: u32,
    cas_required: bool,
    custom_metadata: BTreeMap<String, String>,
    versions: BTreeMap<u64, VersionInfo>,
}

impl Record {
    fn new(now: i64) -> Self {
        Self {
            current: 1,
            max_versions: 0,
            cas_required: false,
            custom_metadata: BTreeMap::new(),
            versions: BTreeMap::from([(1, VersionInfo::new(now))]),
        }
    }

    /// The record of `info`, or the one a secret written before records were kept has.
    fn of(info: &CredentialInfo) -> Result<Self, ApiError> {
        match info.fields.get(RECORD).and_then(serde_json::Value::as_str) {
            Some(text) => parse_record(text),
            None => Ok(Self {
                current: info.version,
                max_versions: 0,
                cas_required: false,
                custom_metadata: BTreeMap::new(),
                versions: BTreeMap::from([(info.version, VersionInfo::new(info.updated_at))]),
            }),
        }
    }

    fn limit(&self) -> usize {
        let m = if self.max_versions == 0 {
            DEFAULT_MAX_VERSIONS
        } else {
            self.max_versions
        };
        usize::try_from(m).unwrap_or(usize::MAX)
    }

    fn oldest(&self) -> u64 {
        self.versions.keys().next().copied().unwrap_or(self.current)
    }

    pub(crate) fn text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Vault's metadata of version `v`.
    fn version_json(&self, v: u64) -> serde_json::Value {
        let i = self.versions.get(&v);
        serde_json::json!({
            "created_time": i.map_or_else(String::new, |i| time_text(i.created)),
            "custom_metadata": self.custom_json(),
            "deletion_time": i.and_then(|i| i.deleted).map_or_else(String::new, time_text),
            "destroyed": i.is_some_and(|i| i.destroyed),
            "version": v,
        })
    }

    fn custom_json(&self) -> serde_json::Value {
        if self.custom_metadata.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::json!(self.custom_metadata)
        }
    }

    /// Vault's metadata of the secret.
    fn metadata_json(&self, info: &CredentialInfo) -> serde_json::Value {
        let versions: serde_json::Map<String, serde_json::Value> = self
            .versions
            .iter()
            .map(|(v, i)| {
                (
                    v.to_string(),
                    serde_json::json!({
                        "created_time": time_text(i.created),
                        "deletion_time": i.deleted.map_or_else(String::new, time_text),
                        "destroyed": i.destroyed,
                    }),
                )
            })
            .collect();
        serde_json::json!({
            "cas_required": self.cas_required,
            "created_time": time_text(info.created_at),
            "current_version": self.current,
            "custom_metadata": self.custom_json(),
            "delete_version_after": "0s",
            "max_versions": self.max_versions,
            "oldest_version": self.oldest(),
            "updated_time": time_text(info.updated_at),
            "versions": versions,
        })
    }
}

impl VersionInfo {
    fn new(now: i64) -> Self {
        Self {
            created: now,
            deleted: None,
            destroyed: false,
        }
    }
}

/// Reads a stored version record; one that does not parse is an integrity failure (the
/// record is under the MAC, so only a bug or a credential written by hand gets here).
pub(crate) fn parse_record(text: &str) -> Result<Record, ApiError> {
    let r: Record = serde_json::from_str(text).map_err(|_| bad_record())?;
    if !r.versions.contains_key(&r.current) {
        return Err(bad_record());
    }
    Ok(r)
}

fn bad_record() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "integrity",
        "the secret's version record is not valid",
    )
}

/// Older versions' pairs, wiped when dropped.
#[derive(Default)]
struct History(serde_json::Map<String, serde_json::Value>);

impl Drop for History {
    fn drop(&mut self) {
        for v in self.0.values_mut() {
            credvault_store::wipe_json(v);
        }
    }
}

impl History {
    fn parse(text: &str) -> Result<Self, ApiError> {
        match serde_json::from_str(text) {
            Ok(serde_json::Value::Object(m)) => Ok(Self(m)),
            Ok(mut other) => {
                credvault_store::wipe_json(&mut other);
                Err(bad_record())
            }
            Err(_) => Err(bad_record()),
        }
    }

    fn text(&self) -> Zeroizing<String> {
        Zeroizing::new(serde_json::to_string(&self.0).unwrap_or_default())
    }

    /// The `history` field's new value: unset when no older version is left.
    fn field(&self) -> serde_json::Value {
        if self.0.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::Value::String(self.text().to_string())
        }
    }
}

fn is_set(info: &CredentialInfo, field: &str) -> bool {
    info.fields.get(field).and_then(serde_json::Value::as_str) == Some(SECRET_MARKER)
}

/// The pairs of the current version and of the older ones, revealed (recorded as an access
/// by `service`) only where asked.
fn reveal(
    scope: &Scope<'_>,
    info: &CredentialInfo,
    current: bool,
    history: bool,
    service: &str,
) -> Result<(Option<Zeroizing<String>>, History), ApiError> {
    let mut fields = Vec::new();
    if current && is_set(info, DATA) {
        fields.push(DATA);
    }
    if history && is_set(info, HISTORY) {
        fields.push(HISTORY);
    }
    if fields.is_empty() {
        return Ok((None, History::default()));
    }
    let r = scope.reveal(&info.id, &fields, Some(service))?;
    let data = r.expose_secret(DATA).map(|t| Zeroizing::new(t.to_owned()));
    let hist = match r.expose_secret(HISTORY) {
        Some(t) => History::parse(t)?,
        None => History::default(),
    };
    Ok((data, hist))
}

/// Removes versions beyond the limit, then older versions while their pairs do not fit.
fn trim(record: &mut Record, history: &mut History) -> Result<(), ApiError> {
    while record.versions.len() > record.limit() {
        let Some(&v) = record.versions.keys().next() else {
            break;
        };
        record.versions.remove(&v);
        if let Some(mut gone) = history.0.remove(&v.to_string()) {
            credvault_store::wipe_json(&mut gone);
        }
    }
    while history.text().len() > HISTORY_BUDGET {
        let Some(&v) = record.versions.keys().find(|&&v| v != record.current) else {
            return Err(ApiError::bad_request(
                "data: larger than a secret may be (64 KiB)",
            ));
        };
        record.versions.remove(&v);
        if let Some(mut gone) = history.0.remove(&v.to_string()) {
            credvault_store::wipe_json(&mut gone);
        }
    }
    if record.text().len() > credvault_store::MAX_FIELD_VALUE_LEN {
        return Err(ApiError::bad_request("too many versions to record"));
    }
    Ok(())
}

/// Runs one attempt at a change until it is done: an attempt that lost a race with another
/// writer (`Ok(None)`) is made again on the new state, at most [`WRITE_ATTEMPTS`] times (then
/// 409).
fn retrying<T>(mut attempt: impl FnMut() -> Result<Option<T>, ApiError>) -> Result<T, ApiError> {
    for _ in 0..WRITE_ATTEMPTS {
        if let Some(done) = attempt()? {
            return Ok(done);
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "conflict",
        "the secret kept changing; try again",
    ))
}

/// A store write in [`retrying`]'s terms: one that lost to another writer (the credential's
/// version changed, or a create found the name taken) is `None`.
fn raced<T>(r: Result<T, StoreError>) -> Result<Option<T>, ApiError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(StoreError::VersionConflict { .. } | StoreError::NameTaken { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn not_found() -> ApiError {
    ApiError::not_found("")
}

fn cas_mismatch() -> ApiError {
    ApiError::bad_request("check-and-set parameter did not match the current version")
}

/// Query of a KV read.
#[derive(Debug, Deserialize)]
pub(crate) struct ReadQuery {
    version: Option<u64>,
}

/// `GET secret/data/PATH[?version=N]`.
pub(crate) async fn read(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(raw): Path<String>,
    q: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let run = async {
        c.require(ApiScope::Reveal)?;
        let name = kv_path(&raw)?;
        KV.covered(&c, &name)?;
        let Query(q) = q.map_err(|_| ApiError::bad_request("query: expected version=N"))?;
        let c2 = c.clone();
        blocking(move || {
            let scope = scope(&s, &c2)?;
            let info = KV.find(&scope, &name)?.ok_or_else(not_found)?;
            let record = Record::of(&info)?;
            let v = match q.version {
                None | Some(0) => record.current,
                Some(v) => v,
            };
            let Some(vi) = record.versions.get(&v) else {
                return Err(not_found());
            };
            let meta = record.version_json(v);
            if vi.deleted.is_some() || vi.destroyed {
                // As Vault: 404, with the version's metadata and no data.
                return Ok((
                    StatusCode::NOT_FOUND,
                    serde_json::json!({ "data": null, "metadata": meta }),
                ));
            }
            let service = format!("vault-kv:{}", c2.key.id);
            let current = v == record.current;
            let (data, history) = reveal(&scope, &info, current, !current, &service)?;
            let pairs: serde_json::Value = if current {
                let text = data.ok_or_else(bad_record)?;
                serde_json::from_str(&text).map_err(|_| bad_record())?
            } else {
                history
                    .0
                    .get(&v.to_string())
                    .cloned()
                    .ok_or_else(bad_record)?
            };
            Ok((
                StatusCode::OK,
                serde_json::json!({ "data": pairs, "metadata": meta }),
            ))
        })
        .await
    };
    match run.await {
        Ok((status, data)) => {
            let mut r = no_store(envelope(&c, data));
            *r.status_mut() = status;
            r
        }
        Err(e) => vault_error(e),
    }
}

/// Body of a KV write.
#[derive(Deserialize)]
pub(crate) struct WriteBody {
    data: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    options: WriteOptions,
}

#[derive(Default, Deserialize)]
struct WriteOptions {
    cas: Option<u64>,
}

impl Drop for WriteBody {
    fn drop(&mut self) {
        for v in self.data.values_mut() {
            credvault_store::wipe_json(v);
        }
    }
}

/// `POST|PUT secret/data/PATH`: a new version.
pub(crate) async fn write(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(raw): Path<String>,
    body: Result<Json<WriteBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let run = async {
        c.require(ApiScope::Write)?;
        let name = kv_path(&raw)?;
        KV.covered(&c, &name)?;
        let b = json_body(body)?;
        let text =
            Zeroizing::new(serde_json::to_string(&b.data).map_err(|_| ApiError::internal())?);
        let cas = b.options.cas;
        drop(b);
        let c2 = c.clone();
        blocking(move || {
            let scope = scope(&s, &c2)?;
            let service = format!("vault-kv-write:{}", c2.key.id);
            retrying(|| {
                let now = s.store.now();
                let Some(info) = KV.find(&scope, &name)? else {
                    if cas.is_some_and(|v| v != 0) {
                        return Err(cas_mismatch());
                    }
                    let record = Record::new(now);
                    let fields = serde_json::json!({ DATA: text.as_str(), RECORD: record.text() });
                    let made = scope.create(
                        NewCredential::new(KV_TYPE, name.as_str(), fields)
                            .environment(KV_ENVIRONMENT),
                    );
                    return Ok(raced(made)?.map(|_| record.version_json(1)));
                };
                let mut record = Record::of(&info)?;
                if record.cas_required && cas.is_none() {
                    return Err(ApiError::bad_request(
                        "check-and-set parameter required for this call",
                    ));
                }
                if cas.is_some_and(|v| v != record.current) {
                    return Err(cas_mismatch());
                }
                let keep = record
                    .versions
                    .get(&record.current)
                    .is_some_and(|v| !v.destroyed);
                let (data, mut history) = reveal(&scope, &info, keep, true, &service)?;
                if let Some(old) = data {
                    let mut old: serde_json::Value =
                        serde_json::from_str(&old).map_err(|_| bad_record())?;
                    if record.versions.contains_key(&record.current) {
                        history.0.insert(record.current.to_string(), old);
                    } else {
                        credvault_store::wipe_json(&mut old);
                    }
                }
                let new = record.current + 1;
                record.current = new;
                record.versions.insert(new, VersionInfo::new(now));
                trim(&mut record, &mut history)?;
                let mut patch = serde_json::json!({ DATA: text.as_str(), RECORD: record.text() });
                patch[HISTORY] = history.field();
                let upd = CredentialUpdate::new()
                    .fields(patch)
                    .expect_version(info.version);
                // Another writer got in first: read again and write on top of its version.
                Ok(raced(scope.update(&info.id, upd))?.map(|_| record.version_json(new)))
            })
        })
        .await
    };
    match run.await {
        Ok(data) => envelope(&c, data),
        Err(e) => vault_error(e),
    }
}

/// What a change to the version record does.
#[derive(Clone, Copy)]
enum Change {
    Delete,
    Undelete,
    Destroy,
}

/// Applies `change` to `versions` (none: the current one) of the secret at `name`.
fn change(
    s: &Shared,
    c: &Caller,
    name: &str,
    versions: Option<Vec<u64>>,
    what: Change,
) -> Result<(), ApiError> {
    let scope = scope(s, c)?;
    retrying(|| {
        let now = s.store.now();
        // Deleting what does not exist succeeds, as in Vault.
        let Some(info) = KV.find(&scope, name)? else {
            return Ok(Some(()));
        };
        let mut record = Record::of(&info)?;
        let asked = versions.clone().unwrap_or_else(|| vec![record.current]);
        let mut touched = false;
        let mut destroy_current = false;
        let mut destroy_older = Vec::new();
        for v in asked {
            let Some(vi) = record.versions.get_mut(&v) else {
                continue;
            };
            match what {
                Change::Delete if vi.deleted.is_none() && !vi.destroyed => {
                    vi.deleted = Some(now);
                    touched = true;
                }
                Change::Undelete if vi.deleted.is_some() && !vi.destroyed => {
                    vi.deleted = None;
                    touched = true;
                }
                Change::Destroy if !vi.destroyed => {
                    vi.destroyed = true;
                    touched = true;
                    if v == record.current {
                        destroy_current = true;
                    } else {
                        destroy_older.push(v);
                    }
                }
                _ => {}
            }
        }
        if !touched {
            return Ok(Some(()));
        }
        let mut patch = serde_json::json!({ RECORD: record.text() });
        if destroy_current {
            patch[DATA] = serde_json::Value::String("{}".into());
        }
        if !destroy_older.is_empty() {
            let service = format!("vault-kv-destroy:{}", c.key.id);
            let (_, mut history) = reveal(&scope, &info, false, true, &service)?;
            for v in destroy_older {
                if let Some(mut gone) = history.0.remove(&v.to_string()) {
                    credvault_store::wipe_json(&mut gone);
                }
            }
            patch[HISTORY] = history.field();
        }
        let upd = CredentialUpdate::new()
            .fields(patch)
            .expect_version(info.version);
        Ok(raced(scope.update(&info.id, upd))?.map(|_| ()))
    })
}

/// Body naming versions (`delete`, `undelete`, `destroy`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VersionsBody {
    versions: Vec<u64>,
}

async fn run_change(
    s: Arc<Shared>,
    c: Caller,
    raw: String,
    versions: Result<Option<Vec<u64>>, ApiError>,
    what: Change,
) -> Response {
    let run = async {
        c.require(ApiScope::Write)?;
        let name = kv_path(&raw)?;
        KV.covered(&c, &name)?;
        let versions = versions?;
        if versions.as_ref().is_some_and(Vec::is_empty) {
            return Err(ApiError::bad_request("no version number provided"));
        }
        let c2 = c.clone();
        blocking(move || change(&s, &c2, &name, versions, what)).await
    };
    crate::vault_api::done(run.await)
}

/// `DELETE secret/data/PATH`: soft-deletes the current version.
pub(crate) async fn delete_current(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(raw): Path<String>,
) -> Response {
    run_change(s, c, raw, Ok(None), Change::Delete).await
}

fn versions_of(
    body: Result<Json<VersionsBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Option<Vec<u64>>, ApiError> {
    json_body(body).map(|b| Some(b.versions))
}

/// `POST secret/delete/PATH`: soft-deletes the versions named.
pub(crate) async fn delete_versions(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(raw): Path<String>,
    body: Result<Json<VersionsBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    run_change(s, c, raw, versions_of(body), Change::Delete).await
}

/// `POST secret/undelete/PATH`: restores soft-deleted versions.
pub(crate) async fn undelete(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(raw): Path<String>,
    body: Result<Json<VersionsBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    run_change(s, c, raw, versions_of(body), Change::Undelete).await
}

/// `POST secret/destroy/PATH`: removes the versions' pairs for good.
pub(crate) async fn destroy(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(raw): Path<String>,
    body: Result<Json<VersionsBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    run_change(s, c, raw, versions_of(body), Change::Destroy).await
}

/// The secret's metadata (`GET secret/metadata/PATH`).
pub(crate) fn metadata(s: &Shared, c: &Caller, name: &str) -> Result<serde_json::Value, ApiError> {
    let info = KV.find(&scope(s, c)?, name)?.ok_or_else(not_found)?;
    Ok(Record::of(&info)?.metadata_json(&info))
}

/// Body of a metadata write.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MetadataBody {
    max_versions: Option<u32>,
    cas_required: Option<bool>,
    custom_metadata: Option<BTreeMap<String, String>>,
    delete_version_after: Option<String>,
}

/// `POST|PUT secret/metadata/PATH`: `max_versions`, `cas_required`, `custom_metadata`.
pub(crate) async fn write_metadata(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(raw): Path<String>,
    body: Result<Json<MetadataBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let run = async {
        c.require(ApiScope::Write)?;
        let name = kv_path(&raw)?;
        KV.covered(&c, &name)?;
        let b = json_body(body)?;
        if b.delete_version_after
            .as_deref()
            .is_some_and(|d| !matches!(d, "" | "0" | "0s"))
        {
            return Err(ApiError::bad_request(
                "delete_version_after: versions are not deleted by age here; 0s only",
            ));
        }
        if let Some(m) = &b.custom_metadata {
            if m.len() > MAX_CUSTOM
                || m.iter().any(|(k, v)| {
                    k.is_empty() || k.len() > MAX_CUSTOM_KEY || v.len() > MAX_CUSTOM_VALUE
                })
            {
                return Err(ApiError::bad_request(
                    "custom_metadata: at most 64 keys of 1-128 bytes, values of at most 512",
                ));
            }
        }
        let c2 = c.clone();
        blocking(move || {
            let scope = scope(&s, &c2)?;
            retrying(|| {
                let Some(info) = KV.find(&scope, &name)? else {
                    // Vault makes metadata for a path with no data yet; a credential needs
                    // its data, so the settings wait for the first write.
                    return Err(ApiError::bad_request(
                        "no secret at this path yet: write its data first",
                    ));
                };
                let mut record = Record::of(&info)?;
                if let Some(m) = b.max_versions {
                    record.max_versions = m;
                }
                if let Some(cr) = b.cas_required {
                    record.cas_required = cr;
                }
                if let Some(m) = &b.custom_metadata {
                    record.custom_metadata.clone_from(m);
                }
                let mut patch = serde_json::json!({});
                // Fewer versions allowed: the oldest go now.
                if record.versions.len() > record.limit() {
                    let service = format!("vault-kv-write:{}", c2.key.id);
                    let (_, mut history) = reveal(&scope, &info, false, true, &service)?;
                    trim(&mut record, &mut history)?;
                    patch[HISTORY] = history.field();
                }
                patch[RECORD] = serde_json::Value::String(record.text());
                let upd = CredentialUpdate::new()
                    .fields(patch)
                    .expect_version(info.version);
                Ok(raced(scope.update(&info.id, upd))?.map(|_| ()))
            })
        })
        .await
    };
    crate::vault_api::done(run.await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(current: u64, max: u32, versions: &[u64]) -> Record {
        Record {
            current,
            max_versions: max,
            cas_required: false,
            custom_metadata: BTreeMap::new(),
            versions: versions.iter().map(|&v| (v, VersionInfo::new(1))).collect(),
        }
    }

    #[test]
    fn trimming_keeps_the_newest_versions_within_the_limit_and_the_budget() {
        let mut r = record(12, 0, &(1..=12).collect::<Vec<_>>());
        let mut h = History(
            (1..12)
                .map(|v| (v.to_string(), serde_json::json!({ "k": v })))
                .collect(),
        );
        trim(&mut r, &mut h).unwrap();
        assert_eq!(
            r.versions.keys().copied().collect::<Vec<_>>(),
            (3..=12).collect::<Vec<_>>()
        );
        assert_eq!(h.0.len(), 9);
        assert!(!h.0.contains_key("2") && h.0.contains_key("3"));

        // Two older versions of 40 KB do not both fit: the older one goes.
        let big = "x".repeat(40_000);
        let mut r = record(3, 0, &[1, 2, 3]);
        let mut h = History(
            [("1", &big), ("2", &big)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), serde_json::json!({ "k": v })))
                .collect(),
        );
        trim(&mut r, &mut h).unwrap();
        assert_eq!(r.versions.keys().copied().collect::<Vec<_>>(), [2, 3]);
        assert_eq!(h.0.keys().collect::<Vec<_>>(), ["2"]);
    }

    proptest::proptest! {
        #[test]
        fn any_record_round_trips(
            versions in proptest::collection::btree_map(
                1u64..1_000,
                (0i64..i64::MAX, proptest::option::of(0i64..i64::MAX), proptest::bool::ANY),
                1..12,
            ),
            max in 0u32..100,
            cas in proptest::bool::ANY,
            custom in proptest::collection::btree_map("[a-z]{1,8}", ".{0,16}", 0..4),
        ) {
            let r = Record {
                current: *versions.keys().last().unwrap(),
                max_versions: max,
                cas_required: cas,
                custom_metadata: custom,
                versions: versions
                    .into_iter()
                    .map(|(v, (created, deleted, destroyed))| {
                        (v, VersionInfo { created, deleted, destroyed })
                    })
                    .collect(),
            };
            proptest::prop_assert_eq!(parse_record(&r.text()).unwrap(), r);
        }
    }

    #[test]
    fn a_record_round_trips_and_a_bad_one_is_an_integrity_error() {
        let mut r = record(2, 5, &[1, 2]);
        r.custom_metadata.insert("team".into(), "billing".into());
        r.versions.get_mut(&1).unwrap().deleted = Some(7);
        assert_eq!(parse_record(&r.text()).unwrap(), r);
        for bad in [
            "",
            "{}",
            "[]",
            r#"{"current":3,"max_versions":0,"cas_required":false,"custom_metadata":{},"versions":{"1":{"created":1,"deleted":null,"destroyed":false}}}"#,
            r#"{"current":1,"max_versions":0,"cas_required":false,"custom_metadata":{},"versions":{"x":{"created":1,"deleted":null,"destroyed":false}}}"#,
        ] {
            assert_eq!(parse_record(bad).unwrap_err().code, "integrity", "{bad}");
        }
    }
}
