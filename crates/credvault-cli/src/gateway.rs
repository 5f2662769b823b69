//! `credvault serve` and `credvault apikey`: the vault as a network service
//! (crate `credvault-gateway`) and the keys its clients present.
//!
//! The gateway's keys live beside the vault: `DIR/gateway.db` (records, hashes only), or the
//! table `gateway_api_keys` of a vault kept in PostgreSQL, and `DIR/gateway.key` (the server
//! key their hashes and MACs derive from, owner-only; every node needs the same one).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};
use credvault_gateway::{
    tls, ApiScope, Gateway, GatewayConfig, KeyInfo, KeyPolicy, KeyStore, RateLimit, ServeOptions,
    ServerKey,
};
use credvault_store::audit::{Action, AuditEvent};
use credvault_store::TenantId;

use crate::vault::VaultArgs;
use crate::{Failure, Output};

/// `credvault serve`. Every setting may also come from `--config FILE` (TOML, the same names
/// with `_`: `listen`, `hosts = { "HOST" = "TENANT" }`, `tls_cert`, ...); a flag or variable
/// wins over the file, the file over the default.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// A TOML file with the settings below (unknown keys are refused).
    #[arg(long, env = "CREDVAULT_SERVE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8443).
    #[arg(long, env = "CREDVAULT_LISTEN")]
    listen: Option<SocketAddr>,
    /// A host name and the one tenant served on it, `HOST=TENANT` (repeat for more; also
    /// `CREDVAULT_HOSTS`, comma-separated). A request for any other host is refused.
    #[arg(
        long = "host",
        value_name = "HOST=TENANT",
        env = "CREDVAULT_HOSTS",
        value_delimiter = ','
    )]
    hosts: Vec<String>,
    /// The server certificate chain (PEM); read again on SIGHUP.
    #[arg(long, env = "CREDVAULT_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The server certificate's private key (PEM); read again on SIGHUP.
    #[arg(long, env = "CREDVAULT_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Also accept TLS 1.2 (TLS 1.3 only by default).
    #[arg(long)]
    tls12: bool,
    /// Serve clear HTTP instead of TLS: refused unless the address is loopback.
    #[arg(long)]
    insecure_http: bool,
    /// A proxy whose X-Forwarded-For is believed: an address or a range (`10.0.0.0/8`;
    /// repeat for more).
    #[arg(
        long = "trust-proxy",
        value_name = "IP|CIDR",
        env = "CREDVAULT_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    trust_proxy: Vec<ProxyAddr>,
    /// Rate limit of a key without its own (`N/s` or `N/min`; default 50/s).
    #[arg(long, value_name = "RATE")]
    key_rate: Option<RateLimit>,
    /// Rate limit of each tenant (`N/s` or `N/min`; default 500/s).
    #[arg(long, value_name = "RATE")]
    tenant_rate: Option<RateLimit>,
    /// Largest request body in bytes (default 1 MiB).
    #[arg(long, value_name = "BYTES")]
    body_limit: Option<usize>,
    /// A range the proxy may reach beyond public addresses (`127.0.0.1/32`, `10.0.0.0/8`;
    /// repeat for more). Loopback, private and link-local upstreams are refused otherwise.
    #[arg(
        long = "allow-upstream",
        value_name = "IP|CIDR",
        env = "CREDVAULT_ALLOW_UPSTREAM",
        value_delimiter = ','
    )]
    allow_upstream: Vec<ProxyAddr>,
    /// Certificate authorities (PEM) the proxy trusts for upstream TLS, beside the system's.
    #[arg(
        long = "upstream-ca",
        value_name = "FILE",
        env = "CREDVAULT_UPSTREAM_CA"
    )]
    upstream_ca: Vec<PathBuf>,
    /// Also receive two-factor email (`credvault tfa`) on this address: a loopback address in
    /// the clear, any other only with STARTTLS (the same certificate as the gateway).
    #[arg(long, env = "CREDVAULT_SMTP_LISTEN", value_name = "ADDR")]
    smtp_listen: Option<SocketAddr>,
    /// A file holding the Twilio account's auth token: enables the inbound-SMS webhook
    /// `POST /tfa/sms/twilio` (each post's X-Twilio-Signature is verified with it).
    #[arg(long, env = "CREDVAULT_TWILIO_AUTH_TOKEN_FILE", value_name = "FILE")]
    twilio_auth_token_file: Option<PathBuf>,
    /// Poll an `imap_mailbox` credential for two-factor mail, `TENANT/NAME` (environment
    /// production; repeat for more).
    #[arg(long = "imap-poll", value_name = "TENANT/NAME")]
    imap_poll: Vec<String>,
    /// Seconds between polls (default 30).
    #[arg(long, value_name = "SECONDS")]
    imap_interval: Option<u64>,
    /// Also trust the certificates in this PEM file for IMAPS.
    #[arg(long, value_name = "FILE")]
    imap_ca_file: Option<PathBuf>,
}

/// A trusted proxy: an address or a CIDR range.
#[derive(Debug, Clone, Copy)]
struct ProxyAddr(ipnet::IpNet);

impl std::str::FromStr for ProxyAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        s.parse::<ipnet::IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
            .map(Self)
            .map_err(|_| "expected an IP address or a CIDR range such as 10.0.0.0/8".to_owned())
    }
}

/// The `--config` file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeFile {
    listen: Option<SocketAddr>,
    #[serde(default)]
    hosts: std::collections::BTreeMap<String, String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    #[serde(default)]
    tls12: bool,
    #[serde(default)]
    insecure_http: bool,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    key_rate: Option<String>,
    tenant_rate: Option<String>,
    /// Per-tenant rate limits.
    #[serde(default)]
    tenant_rates: std::collections::BTreeMap<String, String>,
    body_limit: Option<usize>,
    #[serde(default)]
    allow_upstream: Vec<String>,
    #[serde(default)]
    upstream_ca: Vec<PathBuf>,
    /// The proxy's DLP detectors per tenant (`[dlp.TENANT]`), and for the others
    /// (`[dlp_default]`).
    #[serde(default)]
    dlp: std::collections::BTreeMap<String, DlpFile>,
    dlp_default: Option<DlpFile>,
    /// Tenants whose credentials come from an external vault (`[sources.TENANT]`).
    #[serde(default)]
    sources: std::collections::BTreeMap<String, SourceFile>,
    smtp_listen: Option<SocketAddr>,
    twilio_auth_token_file: Option<PathBuf>,
    #[serde(default)]
    imap_poll: Vec<String>,
    imap_interval: Option<u64>,
    imap_ca_file: Option<PathBuf>,
}

/// An external source in the `--config` file. The token is read from the variable named by
/// `token_env`, never from the file.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceFile {
    /// `vault-kv` or `connect`.
    kind: String,
    /// The source's base URL (`https://vault.example:8200`).
    url: String,
    /// The variable holding the source's token.
    token_env: String,
    /// `vault-kv`: the KV v2 mount (default `secret`).
    mount: Option<String>,
    /// `connect`: the vault's name.
    vault: Option<String>,
    /// A CA (PEM) the source's certificate is checked against, beside the system's.
    ca: Option<PathBuf>,
}

impl SourceFile {
    fn source(&self, at: &str) -> Result<credvault_gateway::source::SharedSource, Failure> {
        use credvault_gateway::source::{ConnectSource, VaultKvSource};
        let fail = |e: &dyn std::fmt::Display| Failure::usage(format!("--config {at}: {e}"));
        let token = zeroize::Zeroizing::new(std::env::var(&self.token_env).map_err(|_| {
            fail(&format!(
                "token_env: the variable {} is not set",
                self.token_env
            ))
        })?);
        let roots = match &self.ca {
            Some(p) => tls::load_certificates(p).map_err(|e| fail(&e))?,
            None => Vec::new(),
        };
        Ok(match self.kind.as_str() {
            "vault-kv" => Arc::new(
                VaultKvSource::new(
                    &self.url,
                    self.mount.as_deref().unwrap_or("secret"),
                    token,
                    roots,
                )
                .map_err(|e| fail(&e))?,
            ),
            "connect" => {
                let vault = self
                    .vault
                    .as_deref()
                    .ok_or_else(|| fail(&"vault: the Connect vault's name is required"))?;
                Arc::new(ConnectSource::new(&self.url, vault, token, roots).map_err(|e| fail(&e))?)
            }
            _ => return Err(fail(&"kind: expected vault-kv or connect")),
        })
    }
}

/// One DLP policy of the `--config` file: the built-in detectors with some actions changed
/// or turned off, and custom expressions.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DlpFile {
    #[serde(default)]
    block: Vec<String>,
    #[serde(default)]
    redact: Vec<String>,
    #[serde(default)]
    warn: Vec<String>,
    #[serde(default)]
    off: Vec<String>,
    #[serde(default)]
    custom: Vec<CustomDetector>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomDetector {
    name: String,
    pattern: String,
    action: String,
}

fn dlp_action(s: &str) -> Result<credvault_dlp::Action, String> {
    match s {
        "block" => Ok(credvault_dlp::Action::Block),
        "redact" => Ok(credvault_dlp::Action::Redact),
        "warn" => Ok(credvault_dlp::Action::Warn),
        _ => Err("action: expected block, redact or warn".into()),
    }
}

impl DlpFile {
    fn scanner(&self, at: &str) -> Result<credvault_dlp::Scanner, Failure> {
        let fail = |e: &dyn std::fmt::Display| Failure::usage(format!("--config {at}: {e}"));
        let mut s = credvault_dlp::Scanner::builtin();
        for (names, action) in [
            (&self.block, credvault_dlp::Action::Block),
            (&self.redact, credvault_dlp::Action::Redact),
            (&self.warn, credvault_dlp::Action::Warn),
        ] {
            for n in names {
                s = s.with_action(n, action).map_err(|e| fail(&e))?;
            }
        }
        for n in &self.off {
            if !s.detectors().iter().any(|(d, _)| d == n) {
                return Err(fail(&format!("off: no detector named {n}")));
            }
            s = s.without(n);
        }
        for c in &self.custom {
            let action = dlp_action(&c.action).map_err(|e| fail(&e))?;
            s = s
                .with_custom(&c.name, &c.pattern, action)
                .map_err(|e| fail(&e))?;
        }
        Ok(s)
    }
}

/// Largest config file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

fn read_config(path: &Path) -> Result<ServeFile, Failure> {
    use std::io::Read;
    let what =
        |e: &dyn std::fmt::Display| Failure::usage(format!("--config {}: {e}", path.display()));
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| what(&e))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(what(&"larger than 1 MiB"));
    }
    // toml's message names the key and the line; the file holds no secret (paths and names).
    toml::from_str(&text).map_err(|e| what(&e.message().to_owned()))
}

fn rate(what: &str, text: &str) -> Result<RateLimit, Failure> {
    text.parse()
        .map_err(|e| Failure::usage(format!("--config {what}: {e}")))
}

/// `credvault apikey ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum ApikeyCommand {
    /// Make a key and print it once (`--json`: field `key`); only its keyed hash is kept.
    Create(CreateArgs),
    /// List keys (never a key): id, tenant, scopes, limits, expiry, revocation, last use.
    List,
    /// Revoke a key by id; it is refused from then on.
    Revoke {
        /// The key's id (the 12 characters after `cvk_`).
        id: String,
    },
}

/// `credvault apikey create`.
#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// The one tenant the key works for.
    #[arg(long)]
    tenant: String,
    /// What it may do: read, reveal, totp, proxy, test, write, admin (repeat or comma-separate).
    #[arg(long = "scope", value_delimiter = ',', required = true)]
    scopes: Vec<ApiScope>,
    /// Only credentials whose names match a glob (`*`, `?`; repeat for more).
    #[arg(long = "credential", value_name = "GLOB")]
    credentials: Vec<String>,
    /// Only credentials in these environments (repeat for more).
    #[arg(long = "environment", value_name = "ENV")]
    environments: Vec<String>,
    /// Expiry: RFC 3339 time (`2027-01-01T00:00:00Z`).
    #[arg(long, value_name = "TIME")]
    expires: Option<String>,
    /// Its own rate limit (`N/s` or `N/min`).
    #[arg(long, value_name = "RATE")]
    rate_limit: Option<RateLimit>,
    /// A name for people (also the default `service` in its audit records).
    #[arg(long)]
    name: Option<String>,
}

/// The vault's API keys: in its PostgreSQL database when it is kept there (every node shares
/// them), else in `DIR/gateway.db`.
fn key_store(dir: &Path) -> Result<KeyStore, Failure> {
    let server = ServerKey::load_or_create(&dir.join("gateway.key")).map_err(Failure::new)?;
    match credvault_store::Vault::database_config(dir).map_err(Failure::new)? {
        Some(db) => {
            let mut pg = crate::vault::pg_opts()?;
            if let Some(schema) = &db.schema {
                pg = pg.schema(schema.clone());
            }
            KeyStore::open_postgres(&db.url, &pg, server).map_err(Failure::new)
        }
        None => KeyStore::open(&dir.join("gateway.db"), server).map_err(Failure::new),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn info_json(k: &KeyInfo) -> serde_json::Value {
    serde_json::to_value(k).unwrap_or_default()
}

fn info_line(k: &KeyInfo) -> String {
    let scopes: Vec<&str> = k.policy.scopes.iter().map(|s| s.as_str()).collect();
    let mut line = format!(
        "{}  tenant={}  scopes={}",
        k.id,
        k.policy.tenant.as_str(),
        scopes.join(",")
    );
    if !k.policy.name.is_empty() {
        line.push_str(&format!("  name={:?}", k.policy.name));
    }
    if !k.policy.credentials.is_empty() {
        line.push_str(&format!("  credentials={}", k.policy.credentials.join(",")));
    }
    if !k.policy.environments.is_empty() {
        line.push_str(&format!(
            "  environments={}",
            k.policy.environments.join(",")
        ));
    }
    if let Some(r) = k.policy.rate_limit {
        line.push_str(&format!("  rate={r}"));
    }
    if let Some(t) = k.policy.expires_at {
        line.push_str(&format!("  expires={}", time_text(t)));
    }
    if let Some(t) = k.revoked_at {
        line.push_str(&format!("  REVOKED {}", time_text(t)));
    }
    if let Some(t) = k.last_used_at {
        line.push_str(&format!(
            "  last-used={} from {}",
            time_text(t),
            k.last_ip.as_deref().unwrap_or("?")
        ));
    }
    line
}

fn time_text(ms: i64) -> String {
    credvault_store::audit::Timestamp::from_unix_millis(u64::try_from(ms).unwrap_or(0)).to_string()
}

/// Records a key change in the vault's audit log (fail-closed: an error is the command's).
fn record(
    vault: &credvault_store::Vault,
    actor: &str,
    tenant: &str,
    action: &str,
    id: &str,
) -> Result<(), Failure> {
    let event = AuditEvent::new(tenant, actor, Action::Other(action.into())).with_resource(
        credvault_store::audit::Resource::credential(format!("apikey:{id}")),
    );
    vault.store().record_event(&event).map_err(Failure::new)
}

pub(crate) fn apikey(v: &VaultArgs, cmd: ApikeyCommand) -> Result<Output, Failure> {
    let dir = v.dir();
    let actor = v.actor();
    match cmd {
        ApikeyCommand::Create(a) => {
            let tenant = TenantId::new(a.tenant.as_str()).map_err(Failure::usage)?;
            let mut policy = KeyPolicy::new(tenant.clone(), a.scopes)
                .credentials(a.credentials)
                .environments(a.environments);
            if let Some(n) = a.name {
                policy = policy.name(n);
            }
            if let Some(r) = a.rate_limit {
                policy = policy.rate_limit(r);
            }
            if let Some(t) = a.expires {
                let ts: credvault_store::audit::Timestamp = t
                    .parse()
                    .map_err(|e| Failure::usage(format!("--expires: {e}")))?;
                policy = policy.expires_at(i64::try_from(ts.as_unix_millis()).unwrap_or(i64::MAX));
            }
            crate::vault::with_vault(v, |vault| {
                // The tenant must exist: a key for a tenant that does not is a typo.
                vault
                    .store()
                    .tenant(&tenant, actor.as_str())
                    .map_err(Failure::new)?;
                let keys = key_store(&dir)?;
                let new = keys.create(policy, now_ms()).map_err(Failure::new)?;
                record(
                    vault,
                    &actor,
                    tenant.as_str(),
                    "apikey_created",
                    &new.info.id,
                )?;
                let mut json = info_json(&new.info);
                json["key"] = serde_json::Value::String(new.expose().to_owned());
                Ok(Output::Text {
                    text: format!(
                        "{}\n\nid {} — the key is shown only now; store it in the client's \
                         secret store.\n",
                        new.expose(),
                        new.info.id
                    ),
                    json,
                })
            })
        }
        ApikeyCommand::List => {
            let keys = key_store(&dir)?;
            let list = keys.list().map_err(Failure::new)?;
            let text: String = list.iter().map(|k| info_line(k) + "\n").collect();
            Ok(Output::Text {
                text: if text.is_empty() {
                    "no API keys\n".into()
                } else {
                    text
                },
                json: serde_json::Value::Array(list.iter().map(info_json).collect()),
            })
        }
        ApikeyCommand::Revoke { id } => crate::vault::with_vault(v, |vault| {
            let keys = key_store(&dir)?;
            let info = keys.revoke(&id, now_ms()).map_err(Failure::new)?;
            record(
                vault,
                &actor,
                info.policy.tenant.as_str(),
                "apikey_revoked",
                &info.id,
            )?;
            Ok(Output::Text {
                text: format!("revoked {}\n", info.id),
                json: info_json(&info),
            })
        }),
    }
}

fn parse_hosts(hosts: &[String], cfg: GatewayConfig) -> Result<GatewayConfig, Failure> {
    let mut cfg = cfg;
    for h in hosts {
        let (host, tenant) = h
            .split_once('=')
            .ok_or_else(|| Failure::usage(format!("--host {h:?}: expected HOST=TENANT")))?;
        let tenant =
            TenantId::new(tenant.trim()).map_err(|e| Failure::usage(format!("--host: {e}")))?;
        cfg = cfg
            .host(host.trim(), tenant)
            .map_err(|e| Failure::usage(format!("--host: {e}")))?;
    }
    Ok(cfg)
}

pub(crate) fn serve(v: &VaultArgs, a: ServeArgs) -> Result<Output, Failure> {
    let dir = v.dir();
    let file = match &a.config {
        Some(p) => read_config(p)?,
        None => ServeFile::default(),
    };
    let listen = a
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8443)));
    // Hosts from flags or variables replace the file's, as a whole.
    let hosts: Vec<String> = if a.hosts.is_empty() {
        file.hosts.iter().map(|(h, t)| format!("{h}={t}")).collect()
    } else {
        a.hosts.clone()
    };
    if hosts.is_empty() {
        return Err(Failure::usage(
            "no host to serve: give --host HOST=TENANT (or hosts in --config)",
        ));
    }
    let key_rate = match (a.key_rate, &file.key_rate) {
        (Some(r), _) => r,
        (None, Some(t)) => rate("key_rate", t)?,
        (None, None) => GatewayConfig::default().key_rate,
    };
    let tenant_rate = match (a.tenant_rate, &file.tenant_rate) {
        (Some(r), _) => r,
        (None, Some(t)) => rate("tenant_rate", t)?,
        (None, None) => GatewayConfig::default().tenant_rate,
    };
    let mut cfg = parse_hosts(&hosts, GatewayConfig::default())?
        .key_rate(key_rate)
        .tenant_rate(tenant_rate)
        .body_limit(
            a.body_limit
                .or(file.body_limit)
                .unwrap_or(GatewayConfig::default().body_limit),
        );
    for (t, r) in &file.tenant_rates {
        let id = TenantId::new(t.as_str())
            .map_err(|e| Failure::usage(format!("--config tenant_rates: {e}")))?;
        cfg = cfg.tenant_rate_for(id, rate("tenant_rates", r)?);
    }
    let proxies = if a.trust_proxy.is_empty() {
        file.trusted_proxies
            .iter()
            .map(|p| {
                p.parse::<ProxyAddr>()
                    .map_err(|e| Failure::usage(format!("--config trusted_proxies: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?
    } else {
        a.trust_proxy
    };
    for p in proxies {
        cfg = cfg.trust_proxy_range(p.0);
    }
    let allow = if a.allow_upstream.is_empty() {
        file.allow_upstream
            .iter()
            .map(|p| {
                p.parse::<ProxyAddr>()
                    .map_err(|e| Failure::usage(format!("--config allow_upstream: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?
    } else {
        a.allow_upstream
    };
    for p in allow {
        cfg = cfg.allow_upstream(p.0);
    }
    let cas = if a.upstream_ca.is_empty() {
        &file.upstream_ca
    } else {
        &a.upstream_ca
    };
    for path in cas {
        for c in tls::load_certificates(path).map_err(Failure::new)? {
            cfg = cfg.upstream_root(c);
        }
    }
    for (t, d) in &file.dlp {
        let id =
            TenantId::new(t.as_str()).map_err(|e| Failure::usage(format!("--config dlp: {e}")))?;
        cfg = cfg.dlp_for(id, d.scanner(&format!("dlp.{t}"))?);
    }
    if let Some(d) = &file.dlp_default {
        cfg = cfg.dlp_default(d.scanner("dlp_default")?);
    }
    for (t, src) in &file.sources {
        let id = TenantId::new(t.as_str())
            .map_err(|e| Failure::usage(format!("--config sources: {e}")))?;
        cfg = cfg.source(id, src.source(&format!("sources.{t}"))?);
    }
    let tls_cert = a.tls_cert.or(file.tls_cert);
    let tls_key = a.tls_key.or(file.tls_key);
    let insecure = a.insecure_http || file.insecure_http;
    let tls12 = a.tls12 || file.tls12;
    let cert = match (&tls_cert, &tls_key, insecure) {
        (Some(c), Some(k), false) => Some(tls::ReloadingCert::load(c, k).map_err(Failure::new)?),
        (None, None, true) => {
            if !listen.ip().is_loopback() {
                return Err(Failure::usage(
                    "--insecure-http: clear HTTP is served on loopback addresses only",
                ));
            }
            None
        }
        (_, _, true) => {
            return Err(Failure::usage(
                "--insecure-http and a TLS certificate: choose one",
            ))
        }
        _ => {
            return Err(Failure::usage(
                "give --tls-cert and --tls-key (or --insecure-http on a loopback address)",
            ))
        }
    };
    let options = match &cert {
        Some(c) => {
            ServeOptions::tls(tls::server_config(Arc::clone(c), tls12).map_err(Failure::new)?)
        }
        None => ServeOptions::insecure_http(),
    };
    let vault = Arc::new(
        credvault_store::Vault::open(&dir, crate::vault::opts(&dir)?).map_err(Failure::new)?,
    );
    for tenant in cfg.hosts.values() {
        vault
            .store()
            .tenant(tenant, "gateway")
            .map_err(|e| Failure::usage(format!("--host: {e}")))?;
    }
    let tfa = Arc::new(crate::tfa::open(&vault, &dir)?);
    let sessions = crate::session::open(&vault, &dir)?;
    if let Some(addr) = a.smtp_listen.or(file.smtp_listen) {
        let smtp_tls = match &cert {
            Some(c) => {
                let mut cfg =
                    (*tls::server_config(Arc::clone(c), true).map_err(Failure::new)?).clone();
                cfg.alpn_protocols.clear();
                Some(Arc::new(cfg))
            }
            None => None,
        };
        let rx = credvault_tfa::SmtpReceiver::bind(addr, smtp_tls, Arc::clone(&tfa))
            .map_err(|e| Failure::usage(format!("--smtp-listen: {e}")))?;
        let local = rx.local_addr().map_err(Failure::new)?;
        rx.spawn().map_err(Failure::new)?;
        eprintln!("credvault: receiving two-factor mail on smtp://{local}");
    }
    let polls = if a.imap_poll.is_empty() {
        file.imap_poll.clone()
    } else {
        a.imap_poll.clone()
    };
    if !polls.is_empty() {
        let mut mailboxes = Vec::new();
        for p in &polls {
            let (t, name) = p
                .split_once('/')
                .ok_or_else(|| Failure::usage(format!("--imap-poll {p}: expected TENANT/NAME")))?;
            let t =
                TenantId::new(t).map_err(|e| Failure::usage(format!("--imap-poll {p}: {e}")))?;
            let scope = vault
                .store()
                .tenant(&t, credvault_tfa::RECEIVER_ACTOR)
                .map_err(|e| Failure::usage(format!("--imap-poll {p}: {e}")))?;
            let info = scope
                .find(name, credvault_store::DEFAULT_ENVIRONMENT)
                .map_err(|e| Failure::usage(format!("--imap-poll {p}: {e}")))?;
            mailboxes.push((t, info.id, p.clone()));
        }
        let trust = crate::tfa::trust(a.imap_ca_file.as_deref().or(file.imap_ca_file.as_deref()))?;
        let every = std::time::Duration::from_secs(
            a.imap_interval.or(file.imap_interval).unwrap_or(30).max(1),
        );
        let (tfa, store) = (Arc::clone(&tfa), vault.store().clone());
        std::thread::Builder::new()
            .name("credvault-imap".into())
            .spawn(move || loop {
                for (t, id, label) in &mailboxes {
                    let polled = store
                        .tenant(t, credvault_tfa::RECEIVER_ACTOR)
                        .map_err(credvault_tfa::TfaError::from)
                        .and_then(|scope| tfa.poll_imap(&scope, id, &trust));
                    if let Err(e) = polled {
                        eprintln!("credvault: polling {label} failed: {e}");
                    }
                }
                std::thread::sleep(every);
            })
            .map_err(Failure::new)?;
        eprintln!(
            "credvault: polling {} IMAP mailbox(es) every {}s",
            polls.len(),
            every.as_secs()
        );
    }
    // Expired browser states and received codes go every minute, whoever asks for them.
    {
        let tfa = Arc::clone(&tfa);
        std::thread::Builder::new()
            .name("credvault-sweeper".into())
            .spawn(move || loop {
                std::thread::sleep(std::time::Duration::from_secs(60));
                if let Err(e) = sessions.sweep() {
                    eprintln!("credvault: session sweep failed: {e}");
                }
                if let Err(e) = tfa.sweep() {
                    eprintln!("credvault: two-factor code sweep failed: {e}");
                }
            })
            .map_err(Failure::new)?;
    }
    let keys = Arc::new(key_store(&dir)?);
    let twilio = match a.twilio_auth_token_file.or(file.twilio_auth_token_file) {
        Some(path) => {
            let text = zeroize::Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| {
                Failure::usage(format!("--twilio-auth-token-file {}: {e}", path.display()))
            })?);
            let token = text.trim();
            if token.is_empty() {
                return Err(Failure::usage(format!(
                    "--twilio-auth-token-file {}: the file is empty",
                    path.display()
                )));
            }
            Some(zeroize::Zeroizing::new(token.as_bytes().to_vec()))
        }
        None => None,
    };
    let gateway = Gateway::new(vault.store().clone(), keys, cfg);
    gateway.set_sessions(
        Arc::new(crate::session::open(&vault, &dir)?),
        Arc::clone(&tfa),
        twilio,
    );
    let reader = Arc::clone(&vault);
    gateway.set_audit_reader(Arc::new(move |q| reader.audit_events(q)));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Failure::new)?;
    let result = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| Failure::new(format!("--listen {listen}: {e}")))?;
        let local = listener.local_addr().map_err(Failure::new)?;
        // One line on stderr when ready, for scripts and tests waiting on the port.
        eprintln!(
            "credvault: serving on {}://{local}",
            if cert.is_some() { "https" } else { "http" }
        );
        if let Some(c) = cert.clone() {
            tokio::spawn(reload_on_hangup(c));
        }
        credvault_gateway::serve(listener, gateway.router(), options, shutdown_signal())
            .await
            .map_err(Failure::new)
    });
    drop(rt);
    result?;
    // The router (and the audit reader's handle) went with the runtime: the vault is ours
    // again, and closing it writes the final checkpoint.
    if let Ok(vault) = Arc::try_unwrap(vault) {
        vault.close().map_err(Failure::new)?;
    }
    Ok(Output::Exit(0))
}

async fn reload_on_hangup(cert: Arc<tls::ReloadingCert>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        match cert.reload() {
            Ok(()) => eprintln!("credvault: TLS certificate reloaded"),
            Err(e) => eprintln!("credvault: TLS certificate not reloaded (the old one stays): {e}"),
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    eprintln!("credvault: shutting down; finishing requests in flight");
}
