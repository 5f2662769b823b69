//! The vault commands: `init`, `tenant`, `add`, `list`, `show`, `reveal`, `update`, `rm`,
//! `totp NAME`, `test`, `rotate`, `type add`, and `audit verify|show` on the vault's own log.
//!
//! Secrets never need to be on the command line: a field given as `key=@FILE` is read from
//! the file, `key=-` from stdin (or a no-echo prompt on a terminal), and required secret fields
//! not given are prompted for on a terminal or read from stdin (a JSON object of the type's
//! fields, or the value itself when one field is missing).

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};
use credvault_schema::{CredentialType, FieldKind, RevealPolicy, TestKind};
use credvault_store::net::AddressClass;
use credvault_store::{
    read_audit_key, verify_vault_audit, AwsStsTester, CredentialInfo, CredentialUpdate, ListFilter,
    NewCredential, Outbound, Progress, SqliteDurability, SqliteStorage, Storage, StoreError,
    TenantId, TesterRegistry, Vault, VaultOptions, DEFAULT_ENVIRONMENT,
};
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use crate::{Failure, Output};

/// The tenant used when `--tenant` is not given; `credvault init` creates it.
pub(crate) const DEFAULT_TENANT: &str = "default";

/// Where the vault is and who acts.
#[derive(Debug, Clone, Args)]
pub(crate) struct VaultArgs {
    /// The vault directory (default: $CREDVAULT_DIR, else `./.credvault`; `quickstart`
    /// uses only this flag).
    #[arg(long = "vault", global = true, value_name = "DIR")]
    pub(crate) vault: Option<PathBuf>,
    /// Who is acting, as recorded in the audit log (default: $USER, or `cli`).
    #[arg(long, global = true, env = "CREDVAULT_ACTOR", value_name = "NAME")]
    pub(crate) actor: Option<String>,
}

impl VaultArgs {
    /// The vault directory.
    pub(crate) fn dir(&self) -> PathBuf {
        self.vault
            .clone()
            .or_else(|| std::env::var_os("CREDVAULT_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(".credvault"))
    }

    pub(crate) fn actor(&self) -> String {
        self.actor
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "cli".into())
    }
}

/// A tenant and an environment.
#[derive(Debug, Clone, Args)]
pub(crate) struct Target {
    /// The tenant (workspace).
    #[arg(long, env = "CREDVAULT_TENANT", default_value = DEFAULT_TENANT)]
    pub(crate) tenant: String,
    /// The environment.
    #[arg(long = "env", default_value = DEFAULT_ENVIRONMENT, value_name = "ENV")]
    pub(crate) environment: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TenantCommand {
    /// Create a tenant with its own data key.
    Add {
        /// Tenant id (letters, digits, `_`, `-`, `.`).
        id: String,
        /// Display name (default: the id).
        #[arg(long)]
        name: Option<String>,
    },
    /// List tenants with their active data key and rotation state.
    List,
}

#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    /// Credential type (see `credvault type list`).
    #[arg(value_name = "TYPE")]
    type_name: String,
    /// Name, unique per tenant and environment.
    name: String,
    #[command(flatten)]
    target: Target,
    /// A field: `key=value`, `key=@FILE` (read from a file) or `key=-` (stdin or prompt).
    #[arg(long = "field", value_name = "KEY=VALUE")]
    fields: Vec<String>,
    /// Fields as a JSON object in a file (`-`: stdin).
    #[arg(long, value_name = "FILE")]
    from_json: Option<String>,
    /// Description.
    #[arg(long)]
    description: Option<String>,
    /// A tag (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Expiry, RFC 3339 (`2027-01-31T00:00:00Z`).
    #[arg(long, value_name = "TIME")]
    expires: Option<String>,
    /// Create it inactive.
    #[arg(long)]
    inactive: bool,
    /// Tighten a secret field's reveal policy beyond its type's: `FIELD=use-only` (reaches
    /// `run`/`inject`, never `reveal`) or `FIELD=write-only` (never leaves the vault).
    /// Repeatable; never loosened later.
    #[arg(long = "reveal", value_name = "FIELD=POLICY")]
    reveal: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// The tenant.
    #[arg(long, env = "CREDVAULT_TENANT", default_value = DEFAULT_TENANT)]
    tenant: String,
    /// Only this type.
    #[arg(long = "type", value_name = "TYPE")]
    type_name: Option<String>,
    /// Only this environment.
    #[arg(long = "env", value_name = "ENV")]
    environment: Option<String>,
    /// Only credentials with this tag (repeatable: all must match).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Only active credentials.
    #[arg(long, conflicts_with = "inactive")]
    active: bool,
    /// Only inactive credentials.
    #[arg(long)]
    inactive: bool,
    /// Only credentials expiring before this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    expiring_before: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct NameArgs {
    /// The credential's name.
    name: String,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
pub(crate) struct TestArgs {
    /// The credential's name.
    name: String,
    #[command(flatten)]
    target: Target,
    /// Also let the test reach this kind of address: loopback, private (10/8, 172.16/12,
    /// 192.168/16, fc00::/7...) or link-local (169.254/16, where cloud metadata listens).
    /// Public addresses only by default. Repeatable.
    #[arg(long, value_name = "CLASS")]
    allow_network: Vec<AddressClass>,
}

#[derive(Debug, Args)]
pub(crate) struct RevealArgs {
    /// The credential's name.
    name: String,
    #[command(flatten)]
    target: Target,
    /// The field to print (exactly its value and a newline).
    #[arg(long, required = true)]
    field: String,
    /// The service asking, recorded in the audit log.
    #[arg(long)]
    service: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct UpdateArgs {
    /// The credential's name.
    name: String,
    #[command(flatten)]
    target: Target,
    /// A field to change: `key=value`, `key=@FILE`, `key=-`; `key=` with `--unset` semantics
    /// is `--unset key`.
    #[arg(long = "field", value_name = "KEY=VALUE")]
    fields: Vec<String>,
    /// An optional field to clear (repeatable).
    #[arg(long = "unset", value_name = "KEY")]
    unset: Vec<String>,
    /// Fields to change as a JSON object in a file (`-`: stdin).
    #[arg(long, value_name = "FILE")]
    from_json: Option<String>,
    /// New name.
    #[arg(long)]
    rename: Option<String>,
    /// New description.
    #[arg(long)]
    description: Option<String>,
    /// Replace the tags (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Activate (`true`) or deactivate (`false`).
    #[arg(long, value_name = "BOOL")]
    active: Option<bool>,
    /// New expiry (RFC 3339), or `none`.
    #[arg(long, value_name = "TIME")]
    expires: Option<String>,
    /// Refuse unless the credential is at this version.
    #[arg(long, value_name = "N")]
    expect_version: Option<u64>,
    /// Tighten a secret field's reveal policy (`FIELD=use-only`, `FIELD=write-only`);
    /// repeatable. A policy is never loosened.
    #[arg(long = "reveal", value_name = "FIELD=POLICY")]
    reveal: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct RmArgs {
    /// The credential's name.
    name: String,
    #[command(flatten)]
    target: Target,
    /// Refuse unless the credential is at this version.
    #[arg(long, value_name = "N")]
    expect_version: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RotateCommand {
    /// Rotate the master key: a new version wraps every tenant's data key; no secret is
    /// re-encrypted. Old versions are retired once they wrap nothing (key files). With
    /// `--to URI`, move every data key to another provider or key instead (a key file to an
    /// HSM, say): resumable (run it again after an interruption), audited, verified; the old
    /// provider is not needed afterwards.
    Master {
        /// The provider to move to (see `init --master`); made when it does not exist yet.
        #[arg(long, value_name = "URI")]
        to: Option<String>,
        /// Allow a kernel-keyring target (forgotten at reboot).
        #[arg(long)]
        volatile_keychain: bool,
    },
    /// Rotate a tenant's data key: every credential is re-encrypted (resumable; run it again
    /// after an interruption).
    Tenant {
        /// The tenant.
        #[arg(long, env = "CREDVAULT_TENANT", default_value = DEFAULT_TENANT)]
        tenant: String,
    },
}

/// `credvault totp NAME` options (the other `totp` subcommands work on a secret directly).
#[derive(Debug, Clone, Args)]
pub(crate) struct TotpNameArgs {
    #[command(flatten)]
    target: Target,
    /// The service asking, recorded in the audit log.
    #[arg(long)]
    service: Option<String>,
}

/// Exit code of a command that found the vault busy (another process held its lock past the
/// timeout): `EX_TEMPFAIL` from sysexits, "try again later".
pub(crate) const EXIT_BUSY: u8 = 75;

pub(crate) fn fail(e: StoreError) -> Failure {
    let busy = matches!(e, StoreError::Busy { .. });
    let mut f = Failure::new(e);
    if busy {
        f.code = EXIT_BUSY;
    }
    f
}

/// Environment variable: how long a command waits for another process's lock on the vault
/// (`250ms`, `5s`; default 5 s).
pub(crate) const LOCK_TIMEOUT_ENV: &str = "CREDVAULT_LOCK_TIMEOUT";

fn lock_timeout() -> Result<std::time::Duration, Failure> {
    let Some(v) = std::env::var_os(LOCK_TIMEOUT_ENV) else {
        return Ok(credvault_store::DEFAULT_LOCK_TIMEOUT);
    };
    let bad = || {
        Failure::usage(format!(
            "{LOCK_TIMEOUT_ENV}: expected a duration such as 250ms or 5s"
        ))
    };
    let v = v.to_str().ok_or_else(bad)?.trim();
    let (digits, unit) = match v.strip_suffix("ms") {
        Some(d) => (d, 1),
        None => (v.strip_suffix('s').ok_or_else(bad)?, 1000),
    };
    let n: u64 = digits.trim().parse().map_err(|_| bad())?;
    Ok(std::time::Duration::from_millis(n.saturating_mul(unit)))
}

/// The CLI's vault options: full durability, the master key from `CREDVAULT_MASTER_KEY` when
/// set (the CLI documents it), the lock timeout from [`LOCK_TIMEOUT_ENV`].
/// Tenants whose secrets must arrive sealed by the client (`StoreConfig::client_sealed_only`):
/// a comma-separated list. Process configuration, not a database value, so that whoever can
/// edit the database cannot lift it (decision 0013).
pub(crate) const CLIENT_SEALED_ONLY_ENV: &str = "CREDVAULT_CLIENT_SEALED_ONLY";

pub(crate) fn opts(dir: &Path) -> Result<VaultOptions, Failure> {
    let options = base_opts()?;
    Ok(match crate::master::provider_for(dir)? {
        Some(p) => options.master_key(p),
        None => options,
    })
}

/// [`opts`] without the vault's own provider (for a vault not made yet).
fn base_opts() -> Result<VaultOptions, Failure> {
    let mut store = credvault_store::StoreConfig::default();
    if let Some(v) = std::env::var_os(CLIENT_SEALED_ONLY_ENV) {
        let v = v.to_str().ok_or_else(|| {
            Failure::usage(format!("{CLIENT_SEALED_ONLY_ENV}: expected tenant ids"))
        })?;
        for t in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let id = credvault_store::TenantId::new(t)
                .map_err(|e| Failure::usage(format!("{CLIENT_SEALED_ONLY_ENV}: {e}")))?;
            store = store.require_client_sealed(id);
        }
    }
    let pg = pg_opts()?;
    Ok(VaultOptions::default()
        .sqlite(SqliteDurability::Full)
        .master_key_from_env()
        .lock_timeout(lock_timeout()?)
        .store(store)
        .postgres(pg))
}

/// How the vault's PostgreSQL connections are made (lock timeout, CA file); the gateway's key
/// table is reached the same way.
pub(crate) fn pg_opts() -> Result<credvault_store::PostgresOptions, Failure> {
    let mut pg = credvault_store::PostgresOptions::default().lock_timeout(lock_timeout()?);
    if let Some(ca) = std::env::var_os(DATABASE_CA_ENV) {
        pg = pg.ca_file(ca);
    }
    Ok(pg)
}

/// Environment variable naming the PEM file of the authorities that sign a PostgreSQL
/// vault's server certificate (default: the system's roots).
const DATABASE_CA_ENV: &str = "CREDVAULT_DATABASE_CA";

fn open(args: &VaultArgs) -> Result<Vault, Failure> {
    Vault::open(&args.dir(), opts(&args.dir())?).map_err(fail)
}

pub(crate) fn tenant_id(t: &str) -> Result<TenantId, Failure> {
    TenantId::new(t).map_err(Failure::usage)
}

fn parse_time(flag: &str, t: &str) -> Result<i64, Failure> {
    let ts: credvault_audit::Timestamp = t
        .parse()
        .map_err(|e| Failure::usage(format!("{flag}: {e}")))?;
    Ok(i64::try_from(ts.as_unix_millis()).unwrap_or(i64::MAX))
}

fn close(v: Vault) -> Result<(), Failure> {
    v.close().map_err(fail)
}

/// Runs `f` on an open vault, then closes it (flushing, final audit checkpoint).
pub(crate) fn with_vault<T>(
    args: &VaultArgs,
    f: impl FnOnce(&Vault) -> Result<T, Failure>,
) -> Result<T, Failure> {
    with_vault_opts(args, opts(&args.dir())?, f)
}

/// [`with_vault`] with other options.
fn with_vault_opts<T>(
    args: &VaultArgs,
    options: VaultOptions,
    f: impl FnOnce(&Vault) -> Result<T, Failure>,
) -> Result<T, Failure> {
    let v = Vault::open(&args.dir(), options).map_err(fail)?;
    let out = f(&v);
    let closed = close(v);
    let out = out?;
    closed?;
    Ok(out)
}

/// `credvault init` options.
#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// Seal the audit log's events at rest under a key wrapped by the master key: the log
    /// files then hold no tenant, actor, credential name or address in the clear (the chain
    /// still verifies with the audit key alone).
    #[arg(long)]
    seal_audit: bool,
    /// Keep the vault in this PostgreSQL database (`postgres://USER@HOST:PORT/DB?sslmode=require`)
    /// instead of `vault.db`: several vault processes, on several machines, can then share it
    /// (each with a copy of this directory). Recorded in `database.json` without a password:
    /// the password comes from PGPASSWORD or the password file, never from the URL.
    #[arg(long, env = "CREDVAULT_DATABASE_URL", value_name = "URL")]
    database: Option<String>,
    /// The schema of that database the vault's tables go in (default: the role's search_path).
    #[arg(long, value_name = "NAME", requires = "database")]
    database_schema: Option<String>,
    /// Where the master key lives, as a URI (recorded in `master.uri`; never a secret):
    /// `file:PATH`, `env:VAR`, `keychain:SERVICE/ACCOUNT[?store=...]`,
    /// `pkcs11:token=T;object=O?module-path=P[&pin-source=F]` (PIN from the file or
    /// CREDVAULT_PKCS11_PIN), `aws-kms://KEY-ID|ARN|alias/NAME`. A file, keychain entry or
    /// PKCS#11 key object that does not exist yet is made. Default: a key file outside the
    /// vault directory (`$CREDVAULT_CONFIG_DIR`, `$XDG_CONFIG_HOME/credvault` or
    /// `~/.config/credvault`, under `keys/`), or `CREDVAULT_MASTER_KEY` when it is set.
    #[arg(long, value_name = "URI")]
    master: Option<String>,
    /// Allow a kernel-keyring (`keychain:` on Linux) master key: it is forgotten at reboot,
    /// so keep a copy elsewhere.
    #[arg(long)]
    volatile_keychain: bool,
}

/// `credvault migrate-storage` options.
#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    /// The PostgreSQL database to move the vault into (an empty one, or an empty schema);
    /// the password from PGPASSWORD or the password file, never from the URL.
    #[arg(long, value_name = "URL")]
    to: String,
    /// The schema of that database the vault's tables go in.
    #[arg(long, value_name = "NAME")]
    database_schema: Option<String>,
}

pub(crate) fn migrate_storage(args: &VaultArgs, a: MigrateArgs) -> Result<Output, Failure> {
    let mut db = credvault_store::DatabaseConfig::new(a.to.clone());
    if let Some(s) = &a.database_schema {
        db = db.schema(s.clone());
    }
    let (v, r) = Vault::migrate_to_postgres(&args.dir(), db, opts(&args.dir())?, &args.actor())
        .map_err(fail)?;
    let dir = v.dir().display().to_string();
    close(v)?;
    let url = credvault_store::redact_database_url(&a.to);
    Ok(Output::Text {
        text: format!(
            "moved vault {dir} into {url}{}: {} tenant(s), {} data key(s), {} credential(s) copied verbatim; {} audit record(s) kept, the chain continues in the database; verified\n  kept: {dir}/vault.db.migrated, {dir}/audit.migrated/\n",
            if r.resumed { " (resumed)" } else { "" },
            r.tenants,
            r.data_keys,
            r.credentials,
            r.audit_records,
        ),
        json: json!({
            "vault": dir,
            "database": url,
            "tenants": r.tenants,
            "data_keys": r.data_keys,
            "credentials": r.credentials,
            "audit_records": r.audit_records,
            "resumed": r.resumed,
        }),
    })
}

pub(crate) fn init(args: &VaultArgs, a: InitArgs) -> Result<Output, Failure> {
    let dir = args.dir();
    let mut options = base_opts()?;
    let mut made_key = false;
    let master_uri = match &a.master {
        Some(m) => {
            let uri = crate::master::parse_uri("--master", m)?;
            if Vault::exists(&dir) {
                return Err(fail(credvault_store::StoreError::Vault {
                    what: "vault",
                    path: dir.display().to_string(),
                    reason: "already holds a vault".to_owned(),
                }));
            }
            let (provider, made) = crate::master::open_or_create(&uri, &dir, a.volatile_keychain)?;
            made_key = made;
            options = options.master_key(provider);
            Some(uri)
        }
        // The default: a key file outside the vault directory (unless the key comes from
        // CREDVAULT_MASTER_KEY).
        None if std::env::var_os(credvault_store::MASTER_KEY_ENV).is_none() => {
            let path = crate::master::default_key_file(&dir);
            options = options.master_key_file(path.clone());
            made_key = true;
            Some(credvault_kms::MasterUri::File(path))
        }
        None => None,
    };
    if a.seal_audit {
        options = options.seal_audit();
    }
    if let Some(url) = &a.database {
        let mut db = credvault_store::DatabaseConfig::new(url.clone());
        if let Some(s) = &a.database_schema {
            db = db.schema(s.clone());
        }
        options = options.database(db);
    }
    let v = Vault::init(&dir, options).map_err(fail)?;
    if let Some(uri) = &master_uri {
        // (The store wrote it for a key file it made.)
        if !dir.join(crate::master::URI_FILE).exists() {
            crate::master::write_uri(&dir.join(crate::master::URI_FILE), uri)?;
        }
    }
    let t = tenant_id(DEFAULT_TENANT)?;
    v.store()
        .create_tenant(&t, "Default", &args.actor())
        .map_err(fail)?;
    let dir = v.dir().display().to_string();
    let sealed = if v.seals_audit() {
        format!("\n  audit seal {dir}/audit.seal.key (wrapped by the master key; events sealed)")
    } else {
        String::new()
    };
    let master = match (&master_uri, v.master_source()) {
        (Some(uri), _) => format!(
            "{uri} ({}; recorded in {dir}/{})",
            if made_key { "made now" } else { "existing key" },
            crate::master::URI_FILE
        ),
        (None, credvault_store::MasterSource::Env) => {
            format!("from {}", credvault_store::MASTER_KEY_ENV)
        }
        (None, other) => format!("{other} (owner-only)"),
    };
    let (database, audit) = match &a.database {
        Some(url) => (
            format!(
                "{} (settings in {dir}/database.json)",
                credvault_store::redact_database_url(url)
            ),
            "the database's audit_log table (one chain for every node)".to_owned(),
        ),
        None => (format!("{dir}/vault.db"), format!("{dir}/audit/")),
    };
    close(v)?;
    Ok(Output::Text {
        text: format!(
            "initialised vault {dir}\n  database   {database}\n  master key {master}\n  audit key  {dir}/audit.key (owner-only)\n  audit log  {audit}{sealed}\n  tenant     {DEFAULT_TENANT}\n"
        ),
        json: json!({"vault": dir, "tenant": DEFAULT_TENANT, "master_key": master, "database": database}),
    })
}

pub(crate) fn tenant(args: &VaultArgs, cmd: TenantCommand) -> Result<Output, Failure> {
    with_vault(args, |v| match cmd {
        TenantCommand::Add { id, name } => {
            let t = tenant_id(&id)?;
            let info = v
                .store()
                .create_tenant(&t, name.as_deref().unwrap_or(&id), &args.actor())
                .map_err(fail)?;
            Ok(Output::Text {
                text: format!(
                    "created tenant {} with data key {}\n",
                    info.id,
                    info.active_key.clone().unwrap_or_default()
                ),
                json: serde_json::to_value(&info).unwrap_or_default(),
            })
        }
        TenantCommand::List => {
            let ts = v.store().tenants().map_err(fail)?;
            let mut text = String::new();
            for t in &ts {
                text.push_str(&format!(
                    "{}\t{}\tkey {}\tmaster v{}{}\n",
                    t.id,
                    t.name,
                    t.active_key.as_deref().unwrap_or("-"),
                    t.master_key_version
                        .map_or_else(|| "?".into(), |v| v.to_string()),
                    if t.rotation_pending {
                        "\trotation pending"
                    } else {
                        ""
                    }
                ));
            }
            Ok(Output::Text {
                text,
                json: serde_json::to_value(&ts).unwrap_or_default(),
            })
        }
    })
}

/// Reads a value given as `@FILE` or `-`; a literal is returned as is.
fn read_value(
    key: &str,
    raw: &str,
    label: &str,
    stdin_used: &mut bool,
) -> Result<Zeroizing<String>, Failure> {
    if let Some(path) = raw.strip_prefix('@') {
        let mut s = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| Failure::new(format!("--field {key}: cannot read {path}: {e}")))?,
        );
        trim_newline(&mut s);
        return Ok(s);
    }
    if raw == "-" {
        if std::io::stdin().is_terminal() {
            return rpassword::prompt_password(format!("{label}: "))
                .map(Zeroizing::new)
                .map_err(|e| Failure::new(format!("cannot read {key} from the terminal: {e}")));
        }
        if *stdin_used {
            return Err(Failure::usage("only one field can be read from stdin"));
        }
        *stdin_used = true;
        let mut s = Zeroizing::new(String::new());
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| Failure::new(format!("cannot read stdin: {e}")))?;
        trim_newline(&mut s);
        return Ok(s);
    }
    Ok(Zeroizing::new(raw.to_owned()))
}

fn trim_newline(s: &mut String) {
    while s.ends_with('\n') || s.ends_with('\r') {
        s.pop();
    }
}

/// A field's text as the JSON its kind expects.
fn typed(ty: &CredentialType, key: &str, text: &str) -> Result<Value, Failure> {
    let kind = ty
        .fields_info()
        .into_iter()
        .find(|f| f.key == key)
        .map(|f| f.kind)
        .ok_or_else(|| Failure::usage(format!("type {} has no field {key:?}", ty.name())))?;
    Ok(match kind {
        FieldKind::Number => text
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| text.parse::<f64>().map(Value::from))
            .map_err(|_| Failure::usage(format!("--field {key}: not a number")))?,
        FieldKind::Boolean => Value::Bool(
            text.parse::<bool>()
                .map_err(|_| Failure::usage(format!("--field {key}: not true or false")))?,
        ),
        _ => Value::String(text.to_owned()),
    })
}

fn read_json_file(arg: &str, stdin_used: &mut bool) -> Result<Map<String, Value>, Failure> {
    let text = if arg == "-" {
        *stdin_used = true;
        let mut s = Zeroizing::new(String::new());
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| Failure::new(format!("cannot read stdin: {e}")))?;
        s
    } else {
        Zeroizing::new(
            std::fs::read_to_string(arg)
                .map_err(|e| Failure::new(format!("--from-json: cannot read {arg}: {e}")))?,
        )
    };
    match serde_json::from_str(&text) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(Failure::usage("--from-json: expected a JSON object")),
    }
}

/// Builds the fields object from `--from-json` and `--field`s.
fn collect_fields(
    ty: &CredentialType,
    from_json: Option<&str>,
    fields: &[String],
    stdin_used: &mut bool,
) -> Result<Map<String, Value>, Failure> {
    let mut obj = match from_json {
        Some(f) => read_json_file(f, stdin_used)?,
        None => Map::new(),
    };
    let labels: Vec<_> = ty.fields_info();
    for f in fields {
        let (k, raw) = f
            .split_once('=')
            .ok_or_else(|| Failure::usage(format!("--field {f:?}: expected KEY=VALUE")))?;
        let label = labels
            .iter()
            .find(|i| i.key == k)
            .map_or(k, |i| i.label.as_str());
        if ty.is_secret(k) == Some(true) && raw != "-" && !raw.starts_with('@') {
            // Refused before anything is read or stored; the value itself is never echoed.
            return Err(Failure::usage(format!(
                "--field {k}: a secret field's value is never taken on the command line \
                 (other users see it in `ps`, and it stays in shell history): use {k}=- for \
                 a prompt or stdin, {k}=@FILE, or leave the field out to be prompted"
            )));
        }
        let value = read_value(k, raw, label, stdin_used)?;
        obj.insert(k.to_owned(), typed(ty, k, &value)?);
    }
    Ok(obj)
}

/// Fills required secret fields not given: a no-echo prompt on a terminal, else stdin.
fn fill_secrets(
    ty: &CredentialType,
    obj: &mut Map<String, Value>,
    stdin_used: bool,
) -> Result<(), Failure> {
    let missing: Vec<_> = ty
        .fields_info()
        .into_iter()
        .filter(|f| f.secret && f.required && !obj.contains_key(&f.key))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if std::io::stdin().is_terminal() {
        for f in missing {
            let v = Zeroizing::new(
                rpassword::prompt_password(format!("{}: ", f.label)).map_err(|e| {
                    Failure::new(format!("cannot read {} from the terminal: {e}", f.key))
                })?,
            );
            obj.insert(f.key.clone(), Value::String(v.to_string()));
        }
        return Ok(());
    }
    if stdin_used {
        return Ok(()); // validation names what is missing
    }
    let mut s = Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut s)
        .map_err(|e| Failure::new(format!("cannot read stdin: {e}")))?;
    trim_newline(&mut s);
    if s.is_empty() {
        return Ok(());
    }
    // A JSON object of this type's fields, or else (one field missing) the value itself.
    let parsed = match serde_json::from_str::<Value>(&s) {
        Ok(Value::Object(m)) if m.keys().all(|k| ty.is_secret(k).is_some()) => Some(m),
        _ => None,
    };
    match (parsed, missing.as_slice()) {
        (Some(m), _) => {
            for (k, v) in m {
                obj.entry(k).or_insert(v);
            }
            Ok(())
        }
        (None, [only]) => {
            obj.insert(only.key.clone(), Value::String(s.to_string()));
            Ok(())
        }
        _ => Err(Failure::usage(format!(
            "several secret fields are missing ({}): give them on stdin as a JSON object",
            missing
                .iter()
                .map(|f| f.key.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn info_text(i: &CredentialInfo) -> String {
    use crate::term::escape as e;
    let mut s = format!(
        "{} [{}] {} (type {}, version {}{})\n",
        e(&i.name),
        e(&i.environment),
        i.id,
        e(&i.type_name),
        i.version,
        if i.is_active { "" } else { ", inactive" }
    );
    for (k, v) in &i.fields {
        let shown = match v {
            Value::String(s) if s == credvault_schema::SECRET_MARKER => "********".to_owned(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        s.push_str(&format!("  {}: {}\n", e(k), e(&shown)));
    }
    if !i.description.is_empty() {
        s.push_str(&format!("  (description) {}\n", e(&i.description)));
    }
    if !i.tags.is_empty() {
        s.push_str(&format!("  (tags) {}\n", e(&i.tags.join(", "))));
    }
    if let Some(t) = i.expires_at {
        s.push_str(&format!("  (expires) {}\n", time_text(t)));
    }
    for (field, policy) in &i.reveal {
        s.push_str(&format!("  (reveal) {}: {}\n", e(field), policy.as_str()));
    }
    if let Some(t) = &i.test_status {
        s.push_str(&format!(
            "  (last test) {}: {}\n",
            e(t),
            e(i.test_message.as_deref().unwrap_or(""))
        ));
    }
    s
}

fn time_text(ms: i64) -> String {
    credvault_audit::Timestamp::from_unix_millis(u64::try_from(ms).unwrap_or(0)).to_string()
}

/// `--reveal FIELD=POLICY` arguments.
fn reveal_args(args: &[String]) -> Result<Vec<(String, RevealPolicy)>, Failure> {
    args.iter()
        .map(|a| {
            let (field, policy) = a.split_once('=').ok_or_else(|| {
                Failure::new("--reveal takes FIELD=POLICY (use-only, write-only)")
            })?;
            let policy = RevealPolicy::parse(policy).ok_or_else(|| {
                Failure::new(format!(
                    "--reveal {}: the policy must be revealable, use-only or write-only",
                    crate::term::escape(field)
                ))
            })?;
            Ok((field.to_owned(), policy))
        })
        .collect()
}

fn info_json(i: &CredentialInfo) -> Value {
    serde_json::to_value(i).unwrap_or_default()
}

pub(crate) fn add(args: &VaultArgs, a: AddArgs) -> Result<Output, Failure> {
    with_vault(args, |v| {
        let ty = v
            .store()
            .credential_type(&a.type_name)
            .map_err(|e| Failure::new(format!("{e} (see `credvault type list`)")))?;
        let mut stdin_used = false;
        let mut obj = collect_fields(&ty, a.from_json.as_deref(), &a.fields, &mut stdin_used)?;
        fill_secrets(&ty, &mut obj, stdin_used)?;
        let mut new = NewCredential::new(&a.type_name, &a.name, Value::Object(obj))
            .environment(&a.target.environment)
            .tags(a.tags.clone());
        if let Some(d) = &a.description {
            new = new.description(d);
        }
        if let Some(e) = &a.expires {
            new = new.expires_at(parse_time("--expires", e)?);
        }
        if a.inactive {
            new = new.inactive();
        }
        for (field, policy) in reveal_args(&a.reveal)? {
            new = new.reveal(field, policy);
        }
        let scope = v
            .store()
            .tenant(&tenant_id(&a.target.tenant)?, args.actor())
            .map_err(fail)?;
        let info = scope.create(new).map_err(validation_lines)?;
        Ok(Output::Text {
            text: format!("created {}", info_text(&info)),
            json: info_json(&info),
        })
    })
}

/// Validation errors one per line (field, rule, message; never a value).
fn validation_lines(e: StoreError) -> Failure {
    match e {
        StoreError::Validation(errs) => Failure::lines(
            std::iter::once("credential does not validate:".to_owned())
                .chain(errs.errors().iter().map(ToString::to_string))
                .collect(),
        ),
        other => fail(other),
    }
}

pub(crate) fn list(args: &VaultArgs, l: ListArgs) -> Result<Output, Failure> {
    with_vault(args, |v| {
        let scope = v
            .store()
            .tenant(&tenant_id(&l.tenant)?, args.actor())
            .map_err(fail)?;
        let mut f = ListFilter::default();
        f.type_name = l.type_name.clone();
        f.environment = l.environment.clone();
        f.tags = l.tags.clone();
        f.active = if l.active {
            Some(true)
        } else if l.inactive {
            Some(false)
        } else {
            None
        };
        f.expiring_before = l
            .expiring_before
            .as_deref()
            .map(|t| parse_time("--expiring-before", t))
            .transpose()?;
        let items = scope.list(&f).map_err(fail)?;
        let mut text = String::new();
        for i in &items {
            text.push_str(&format!(
                "{}\t{}\t{}\tv{}\t{}\t{}\n",
                crate::term::escape(&i.name),
                crate::term::escape(&i.environment),
                crate::term::escape(&i.type_name),
                i.version,
                if i.is_active { "active" } else { "inactive" },
                i.id
            ));
        }
        Ok(Output::Text {
            text,
            json: Value::Array(items.iter().map(info_json).collect()),
        })
    })
}

pub(crate) fn find<'v>(
    v: &'v Vault,
    t: &Target,
    name: &str,
    actor: String,
) -> Result<(credvault_store::Scope<'v>, CredentialInfo), Failure> {
    let scope = v
        .store()
        .tenant(&tenant_id(&t.tenant)?, actor)
        .map_err(fail)?;
    let info = scope.find(name, &t.environment).map_err(fail)?;
    Ok((scope, info))
}

pub(crate) fn show(args: &VaultArgs, n: NameArgs) -> Result<Output, Failure> {
    with_vault(args, |v| {
        let (_, info) = find(v, &n.target, &n.name, args.actor())?;
        Ok(Output::Text {
            text: info_text(&info),
            json: info_json(&info),
        })
    })
}

pub(crate) fn reveal(args: &VaultArgs, r: RevealArgs, json_out: bool) -> Result<Output, Failure> {
    with_vault(args, |v| {
        let (scope, info) = find(v, &r.target, &r.name, args.actor())?;
        let revealed = scope
            .reveal(&info.id, &[r.field.as_str()], r.service.as_deref())
            .map_err(fail)?;
        let value = revealed.expose_secret(&r.field).unwrap_or_default();
        let out = if json_out {
            // Serialized straight into a wiping buffer; the JSON value's copy is wiped too.
            let mut doc = json!({"name": info.name, "field": r.field, "value": value});
            let b = crate::json_line(&doc);
            crate::wipe_json(&mut doc);
            b
        } else {
            let mut b = Zeroizing::new(Vec::with_capacity(value.len() + 1));
            b.extend_from_slice(value.as_bytes());
            b.push(b'\n');
            b
        };
        Ok(Output::Bytes(out))
    })
}

pub(crate) fn update(args: &VaultArgs, u: UpdateArgs) -> Result<Output, Failure> {
    with_vault(args, |v| {
        let (scope, info) = find(v, &u.target, &u.name, args.actor())?;
        let ty = v.store().credential_type(&info.type_name).map_err(fail)?;
        let mut stdin_used = false;
        let mut obj = collect_fields(&ty, u.from_json.as_deref(), &u.fields, &mut stdin_used)?;
        for k in &u.unset {
            obj.insert(k.clone(), Value::Null);
        }
        let mut upd = CredentialUpdate::new();
        if !obj.is_empty() {
            upd = upd.fields(Value::Object(obj));
        }
        if let Some(n) = &u.rename {
            upd = upd.name(n);
        }
        if let Some(d) = &u.description {
            upd = upd.description(d);
        }
        if !u.tags.is_empty() {
            upd = upd.tags(u.tags.clone());
        }
        if let Some(a) = u.active {
            upd = upd.active(a);
        }
        if let Some(e) = &u.expires {
            upd = upd.expires_at(if e == "none" {
                None
            } else {
                Some(parse_time("--expires", e)?)
            });
        }
        if let Some(n) = u.expect_version {
            upd = upd.expect_version(n);
        }
        for (field, policy) in reveal_args(&u.reveal)? {
            upd = upd.reveal(field, policy);
        }
        let out = scope.update(&info.id, upd).map_err(validation_lines)?;
        Ok(Output::Text {
            text: format!("updated {}", info_text(&out)),
            json: info_json(&out),
        })
    })
}

pub(crate) fn rm(args: &VaultArgs, r: RmArgs) -> Result<Output, Failure> {
    with_vault(args, |v| {
        let (scope, info) = find(v, &r.target, &r.name, args.actor())?;
        scope.delete(&info.id, r.expect_version).map_err(fail)?;
        Ok(Output::Text {
            text: format!("deleted {} [{}] {}\n", info.name, info.environment, info.id),
            json: json!({"deleted": info.id, "name": info.name, "environment": info.environment}),
        })
    })
}

pub(crate) fn totp(
    args: &VaultArgs,
    name: &str,
    t: TotpNameArgs,
    json_out: bool,
) -> Result<Output, Failure> {
    with_vault(args, |v| {
        let (scope, info) = find(v, &t.target, name, args.actor())?;
        let code = scope
            .totp_code(&info.id, t.service.as_deref())
            .map_err(fail)?;
        let out = if json_out {
            // A HOTP code does not expire by time: no `valid_until`, `step` is its counter.
            let mut doc = json!({"name": info.name, "code": code.expose_secret(), "step": code.step,
                   "valid_until": (code.expires_at != i64::MAX).then_some(code.expires_at / 1000)});
            let b = crate::json_line(&doc);
            crate::wipe_json(&mut doc);
            b
        } else {
            let mut b = Zeroizing::new(Vec::with_capacity(code.expose_secret().len() + 1));
            b.extend_from_slice(code.expose_secret().as_bytes());
            b.push(b'\n');
            b
        };
        Ok(Output::Bytes(out))
    })
}

pub(crate) fn test(args: &VaultArgs, n: TestArgs) -> Result<Output, Failure> {
    let out = n
        .allow_network
        .iter()
        .fold(Outbound::new(), |o, &class| o.allow(class));
    let mut testers = TesterRegistry::with_outbound(&out);
    // The AWS SDKs' endpoint settings: a VPC or FIPS endpoint, or a test server.
    if let Some(url) = ["AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
    {
        testers.register(
            TestKind::AwsSts,
            Arc::new(AwsStsTester::new(out).with_endpoint(url)),
        );
    }
    let options = opts(&args.dir())?.testers(testers);
    with_vault_opts(args, options, |v| {
        let (scope, info) = find(v, &n.target, &n.name, args.actor())?;
        let out = scope.test(&info.id).map_err(fail)?;
        let text = format!(
            "{}: {} ({})\n",
            crate::term::escape(&info.name),
            out.status_str(),
            crate::term::escape(&out.message)
        );
        let json = json!({"name": info.name, "status": out.status_str(), "message": out.message});
        if out.status_str() == "ok" {
            Ok(Output::Text { text, json })
        } else {
            Ok(Output::Report {
                text,
                json,
                code: 1,
            })
        }
    })
}

/// `rotate master` for a provider named in `master.uri`: a new version where it keeps keys
/// (a PKCS#11 object, a keychain keyring's version), then every data key re-wrapped.
fn rotate_master_in_place(args: &VaultArgs) -> Result<Output, Failure> {
    let dir = args.dir();
    let uri = crate::master::current_uri(&dir)?;
    // Opened first: a vault the key does not open is not touched.
    let v = open(args)?;
    close(v)?;
    let version =
        credvault_kms::rotate(&uri).map_err(|e| crate::master::kms_failure("master key", e))?;
    let v = open(args)?;
    let (bar, mut tick) = progress_bar("re-wrapping data keys");
    let rep = v.rewrap_to_active(&args.actor(), &mut tick).map_err(fail)?;
    bar.finish_and_clear();
    close(v)?;
    if !rep.failed.is_empty() {
        return Err(Failure::new(format!(
            "{} data key(s) could not be re-wrapped; run it again (older versions still open them)",
            rep.failed.len()
        )));
    }
    Ok(Output::Text {
        text: format!(
            "master key rotated in {uri}: version {version} is active; {} data key(s) re-wrapped, {} already current\n",
            rep.rewrapped, rep.current
        ),
        json: json!({"master_key": uri.to_string(), "version": version, "rewrapped": rep.rewrapped, "current": rep.current}),
    })
}

/// `rotate master --to URI`: every data key (and the audit sealing key) moves to another
/// provider. `master.uri` names the new one and `master.previous.uri` the old one until the
/// move is done and verified with the new provider alone; killed at any point, the vault
/// opens with both, and running it again finishes.
fn move_master(args: &VaultArgs, to: &str, volatile_ok: bool) -> Result<Output, Failure> {
    use crate::master::{read_uri, write_uri, PREVIOUS_URI_FILE, URI_FILE};
    let dir = args.dir();
    let to = crate::master::parse_uri("--to", to)?;
    let (uri_file, prev_file) = (dir.join(URI_FILE), dir.join(PREVIOUS_URI_FILE));
    let previous = read_uri(&prev_file)?;
    let resumed = previous.is_some();
    let from = match previous {
        Some(prev) => {
            match read_uri(&uri_file)? {
                // Stopped between recording the old provider and the new one.
                None => write_uri(&uri_file, &to)?,
                Some(u) if u == prev => write_uri(&uri_file, &to)?,
                Some(u) if u == to => {}
                Some(u) => {
                    return Err(Failure::usage(format!(
                        "a move to {u} did not finish: run `rotate master --to` with that URI first"
                    )))
                }
            }
            prev
        }
        None => crate::master::current_uri(&dir)?,
    };
    if !resumed {
        if from == to {
            return Err(Failure::usage("--to: that is the vault's master key already; `rotate master` without --to makes a new version"));
        }
        // The vault opens with its current key before anything changes.
        let v = open(args)?;
        let old_id = v.store().master_key().provider_id().to_owned();
        close(v)?;
        if old_id == credvault_envelope::LOCAL_PROVIDER_ID && crate::master::holds_key_text(&to) {
            return crate::master::copy_local_keyring(args, &from, &to, volatile_ok);
        }
        let (new, _) = crate::master::open_or_create(&to, &dir, volatile_ok)?;
        if new.provider_id() == old_id {
            return Err(Failure::usage(format!(
                "--to: {to} is the same provider kind ({old_id}) as the vault's key: a local keyring moves by copying its key text (`credvault`'s key file into the keychain entry, say), not by re-wrapping"
            )));
        }
        write_uri(&prev_file, &from)?;
        write_uri(&uri_file, &to)?;
    }
    let v = open(args)?;
    let (bar, mut tick) = progress_bar("moving data keys");
    let rep = v.rewrap_to_active(&args.actor(), &mut tick).map_err(fail)?;
    bar.finish_and_clear();
    close(v)?;
    if !rep.failed.is_empty() {
        return Err(Failure::new(format!(
            "{} data key(s) could not be moved; the old provider is still used for them: run it again",
            rep.failed.len()
        )));
    }
    // Verified with the new provider alone before the old one is let go.
    let new = credvault_kms::open(&to).map_err(|e| crate::master::kms_failure("master key", e))?;
    let alone = base_opts()?.master_key(new);
    let v = Vault::open(&dir, alone).map_err(fail)?;
    let check = v.store().check_master_key_all().map_err(fail);
    close(v)?;
    check?;
    std::fs::remove_file(&prev_file)
        .map_err(|e| Failure::new(format!("{}: {e}", prev_file.display())))?;
    let left = crate::master::left_behind(&from);
    Ok(Output::Text {
        text: format!(
            "master key moved{}: {from} -> {to}\n  {} data key(s) re-wrapped, {} already there; every data key opens with the new provider alone{left}\n",
            if resumed { " (resumed)" } else { "" },
            rep.rewrapped,
            rep.current
        ),
        json: json!({"from": from.to_string(), "to": to.to_string(), "rewrapped": rep.rewrapped, "current": rep.current, "resumed": resumed}),
    })
}

fn progress_bar(label: &'static str) -> (indicatif::ProgressBar, impl FnMut(Progress)) {
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(label);
    let b = bar.clone();
    (bar, move |p: Progress| {
        b.set_length(p.total);
        b.set_position(p.done);
    })
}

pub(crate) fn rotate(args: &VaultArgs, cmd: RotateCommand) -> Result<Output, Failure> {
    match cmd {
        RotateCommand::Master {
            to: Some(to),
            volatile_keychain,
        } => move_master(args, &to, volatile_keychain),
        RotateCommand::Master { to: None, .. }
            if crate::master::read_uri(&args.dir().join(crate::master::URI_FILE))?
                .is_some_and(|u| !matches!(u, credvault_kms::MasterUri::File(_))) =>
        {
            rotate_master_in_place(args)
        }
        RotateCommand::Master { to: None, .. } => {
            let v = open(args)?;
            let (bar, mut tick) = progress_bar("re-wrapping data keys");
            let (v, rep, retired) = v.rotate_master(&args.actor(), &mut tick).map_err(fail)?;
            bar.finish_and_clear();
            close(v)?;
            let text = format!(
                "master key rotated: {} data key(s) re-wrapped, {} already current, {} failed; retired master version(s): {}\n",
                rep.rewrapped,
                rep.current,
                rep.failed.len(),
                if retired.is_empty() { "none".into() } else { retired.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ") }
            );
            if !rep.failed.is_empty() {
                return Err(Failure::new(format!(
                    "{} data key(s) could not be re-wrapped; the old master version is kept",
                    rep.failed.len()
                )));
            }
            Ok(Output::Text {
                text,
                json: json!({"rewrapped": rep.rewrapped, "current": rep.current, "retired_versions": retired}),
            })
        }
        RotateCommand::Tenant { tenant } => with_vault(args, |v| {
            let scope = v
                .store()
                .tenant(&tenant_id(&tenant)?, args.actor())
                .map_err(fail)?;
            let (bar, mut tick) = progress_bar("re-encrypting credentials");
            let rep = scope.rotate_key(&mut tick).map_err(fail)?;
            bar.finish_and_clear();
            let mut text = format!(
                "tenant {} data key {}: {} credential(s) re-encrypted to key {}, {} failed, retired {}\n",
                rep.tenant,
                if rep.started { "rotated" } else { "rotation resumed" },
                rep.resealed,
                rep.new_key,
                rep.failed.len(),
                if rep.retired.is_empty() { "none".into() } else { rep.retired.join(", ") }
            );
            if !rep.is_finished() {
                text.push_str(&format!(
                    "not finished: {} credential(s) still under the old key; run it again\n",
                    rep.remaining
                ));
            }
            let json = json!({"tenant": rep.tenant.to_string(), "started": rep.started, "new_key": rep.new_key, "resealed": rep.resealed, "failed": rep.failed, "retired": rep.retired, "finished": rep.is_finished(), "remaining": rep.remaining});
            if rep.failed.is_empty() && rep.is_finished() {
                Ok(Output::Text { text, json })
            } else {
                Ok(Output::Report {
                    text,
                    json,
                    code: 1,
                })
            }
        }),
    }
}

pub(crate) fn type_add(args: &VaultArgs, file: &Path) -> Result<Output, Failure> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure::new(format!("cannot read {}: {e}", file.display())))?;
    with_vault(args, |v| {
        let name = v.add_type(&text).map_err(fail)?;
        Ok(Output::Text {
            text: format!(
                "registered credential type {name} in {}\n",
                v.dir().display()
            ),
            json: json!({"registered": name}),
        })
    })
}

/// `credvault verify`: the audit log, every record's MAC, the records against the log.
pub(crate) fn verify(args: &VaultArgs) -> Result<Output, Failure> {
    with_vault(args, |v| {
        let r = v.verify().map_err(fail)?;
        let s = &r.store;
        let audit_text = match (&r.audit.report.problem, &r.audit.head_problem) {
            (Some(p), _) => format!(
                "audit log NOT intact: record {}: {}: {}",
                p.seq, p.kind, p.detail
            ),
            (None, Some(h)) => format!("audit log NOT intact: {h}"),
            (None, None) => format!(
                "audit log intact: {} records, {} checkpoints authenticated",
                r.audit.report.records, r.audit.report.checkpoints_checked
            ),
        };
        let mut text = format!(
            "{audit_text}\nrecords: {} tenants, {} data keys, {} credentials checked against {} audit events\n",
            s.tenants, s.data_keys, s.credentials, s.events
        );
        for f in &s.findings {
            let problem = match &f.problem {
                credvault_store::Problem::Integrity => {
                    "does not match its record MAC (changed outside the vault)".to_owned()
                }
                credvault_store::Problem::NotInLog => {
                    "exists but the audit log never recorded its creation".to_owned()
                }
                credvault_store::Problem::DeletedButPresent => {
                    "was deleted according to the audit log, yet is present".to_owned()
                }
                credvault_store::Problem::Missing => {
                    "is live according to the audit log, but its row is gone".to_owned()
                }
                credvault_store::Problem::VersionMismatch { stored, logged } => format!(
                    "is at version {stored}, the audit log's last write is version {logged}"
                ),
                credvault_store::Problem::RepeatedAuthentication { count } => {
                    format!("rows were authenticated {count} times (the upgrade flag was reset)")
                }
                _ => "has a problem this version cannot describe".to_owned(),
            };
            text.push_str(&format!(
                "  {} {} in tenant {}: {problem}\n",
                f.record,
                crate::term::escape(&f.id),
                crate::term::escape(&f.tenant)
            ));
        }
        let ok = r.is_ok();
        text.push_str(if ok {
            "vault verified: nothing found\n"
        } else {
            "vault NOT verified\n"
        });
        let json = json!({
            "ok": ok,
            "audit": {
                "intact": r.audit.is_intact(),
                "records": r.audit.report.records,
                "problem": r.audit.report.problem.as_ref().map(|p| p.detail),
                "head_problem": r.audit.head_problem,
            },
            "store": s,
        });
        Ok(if ok {
            Output::Text { text, json }
        } else {
            Output::Report {
                text,
                json,
                code: 1,
            }
        })
    })
}

/// `credvault audit verify` with no files: the vault's own log, its anchor, and the head the
/// database recorded.
pub(crate) fn audit_anchor(args: &VaultArgs) -> Result<Output, Failure> {
    with_vault(args, |v| {
        let anchor = v.anchor().map_err(fail)?;
        let line = String::from_utf8_lossy(&anchor.to_line()).into_owned();
        let json: Value = serde_json::from_str(&line).map_err(Failure::new)?;
        Ok(Output::Text { text: line, json })
    })
}

/// Whether the vault in `args` is kept in PostgreSQL (its audit chain in the database).
pub(crate) fn in_database(args: &VaultArgs) -> bool {
    Vault::database_config_path(&args.dir()).exists()
}

/// Whether the vault in `args` seals its audit log's events (it has a sealing key file).
pub(crate) fn seals_audit(args: &VaultArgs) -> bool {
    Vault::audit_sealing_key_path(&args.dir()).exists()
}

/// `audit show` on a vault whose log seals its events: read through the vault.
pub(crate) fn audit_show(
    args: &VaultArgs,
    query: &credvault_audit::Query,
    json_out: bool,
    csv: bool,
) -> Result<Output, Failure> {
    with_vault(args, |v| {
        let events = v.audit_events(query).map_err(fail)?;
        crate::audit::show_events(&events, json_out, csv)
    })
}

pub(crate) fn audit_verify(args: &VaultArgs, anchor: Option<&Path>) -> Result<Output, Failure> {
    let dir = &args.dir();
    let external = anchor
        .map(|p| {
            credvault_store::audit::Anchor::load(p)
                .map_err(|e| Failure::new(format!("audit anchor: {e}")))
        })
        .transpose()?;
    let check = if Vault::database_config_path(dir).exists() {
        // A PostgreSQL vault: its chain is in the database, read through the vault.
        with_vault(args, |v| {
            v.verify_audit_against(external.as_ref()).map_err(fail)
        })?
    } else {
        let db = Vault::db_path(dir);
        if !db.exists() {
            return Err(Failure::new(format!(
                "{} holds no vault; run `credvault init`",
                dir.display()
            )));
        }
        let key = read_audit_key(dir).map_err(fail)?;
        let head = SqliteStorage::open(&db, SqliteDurability::Full)
            .and_then(|s| s.audit_head())
            .map_err(Failure::new)?;
        verify_vault_audit(dir, &key, head, external.as_ref()).map_err(fail)?
    };
    if let Some(p) = &check.report.problem {
        return Err(Failure::new(format!(
            "audit log NOT intact: record {}: {}: {}; {} records verified before it",
            p.seq, p.kind, p.detail, check.report.records
        )));
    }
    if let Some(h) = &check.head_problem {
        return Err(Failure::new(format!("audit log NOT intact: {h}")));
    }
    if let Some(a) = &check.anchor_problem {
        return Err(Failure::new(format!("audit log NOT intact: {a}")));
    }
    let r = &check.report;
    let head_text = check.stored_head.map_or_else(
        || "no head recorded yet".to_owned(),
        |h| format!("holds record {} recorded by the database", h.seq),
    );
    Ok(Output::Text {
        text: format!(
            "audit log intact: {} records ({} events), {} checkpoints authenticated, anchor checked{}, {head_text}; last record {}\n",
            r.records,
            r.events,
            r.checkpoints_checked,
            external.as_ref().map_or_else(String::new, |a| format!(
                ", reaches the external anchor (record {})",
                a.seq
            )),
            r.last_seq.map_or_else(|| "-".into(), |s| s.to_string())
        ),
        json: json!({
            "intact": true, "records": r.records, "events": r.events,
            "checkpoints_checked": r.checkpoints_checked, "last_seq": r.last_seq,
            "stored_head_seq": check.stored_head.map(|h| h.seq),
        }),
    })
}

/// The vault's audit log directory, for `audit show` with no files.
pub(crate) fn audit_dir(args: &VaultArgs) -> PathBuf {
    Vault::audit_dir(&args.dir())
}
