//! `credvault session` and `credvault lease`: saved browser states, their settings, and leases
//! on a credential's account (crate credvault-session).

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use clap::{Args, Subcommand};
use credvault_session::{
    parse_duration, BrowserState, LeaseKind, ProxySetting, ProxyVia, SessionConfig, SessionError,
    Sessions, StoreKinds, MAX_STATE_LEN,
};
use credvault_store::{Scope, Vault};
use serde_json::json;
use zeroize::Zeroizing;

use crate::vault::{fail, find, tenant_id, with_vault, Target, VaultArgs, EXIT_BUSY};
use crate::{Failure, Output};

/// Exit code of `session load` when there is no saved state (or it expired).
pub(crate) const EXIT_NO_SESSION: u8 = 3;

#[derive(Debug, Subcommand)]
pub(crate) enum SessionCommand {
    /// Show or change a credential's session settings (no option: show them).
    Config(ConfigArgs),
    /// Save a browser state (Playwright `storageState` JSON, from stdin) for a credential.
    Save(ProfileArgs),
    /// Print a credential's saved browser state; exit 3 with one line when there is none or
    /// it expired.
    Load(ProfileArgs),
    /// List the tenant's saved states (never the states).
    List(TenantArgs),
    /// Show a credential's saved states (versions, times, expiry; never the states) and its
    /// session settings.
    Show(NameArgs),
    /// Remove a credential's saved state (every profile unless `--profile`).
    Rm(RmArgs),
    /// Remove every expired state, and those of deleted credentials.
    Sweep,
}

#[derive(Debug, Args)]
pub(crate) struct TenantArgs {
    /// The tenant (workspace).
    #[arg(long, env = "CREDVAULT_TENANT", default_value = crate::vault::DEFAULT_TENANT)]
    tenant: String,
}

#[derive(Debug, Args)]
pub(crate) struct ProfileArgs {
    /// The credential's name.
    name: String,
    #[command(flatten)]
    target: Target,
    /// The browser profile.
    #[arg(long, default_value = "default")]
    profile: String,
}

#[derive(Debug, Args)]
pub(crate) struct NameArgs {
    /// The credential's name.
    name: String,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
pub(crate) struct RmArgs {
    /// The credential's name.
    name: String,
    #[command(flatten)]
    target: Target,
    /// Only this profile.
    #[arg(long)]
    profile: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ConfigArgs {
    /// The credential's name.
    name: String,
    #[command(flatten)]
    target: Target,
    /// Whether several runs may hold the account at once.
    #[arg(long, value_name = "yes|no")]
    multiple: Option<YesNo>,
    /// At most N runs at once (`none`: no limit).
    #[arg(long, value_name = "N|none")]
    max_concurrent: Option<String>,
    /// Whether a login excludes every other lease.
    #[arg(long, value_name = "yes|no")]
    login_lock: Option<YesNo>,
    /// Expire a saved state this long after its last use (`90s`, `15m`, `12h`, `7d`, `none`).
    #[arg(long, value_name = "DURATION")]
    idle: Option<String>,
    /// Expire a saved state this long after its login.
    #[arg(long, value_name = "DURATION")]
    absolute: Option<String>,
    /// Which parts of the state to keep: any of cookies,local,session.
    #[arg(long, value_name = "LIST")]
    store: Option<String>,
    /// The credential's proxy: the name of an `http_proxy` credential, `direct` (none,
    /// whatever the workflow says) or `inherit` (the workflow's default).
    #[arg(long, value_name = "NAME|direct|inherit")]
    proxy: Option<String>,
    /// The proxy credential's environment (default: this credential's).
    #[arg(long, value_name = "ENV", requires = "proxy")]
    proxy_env: Option<String>,
    /// A region hint for the proxy.
    #[arg(long, value_name = "REGION", requires = "proxy")]
    proxy_region: Option<String>,
    /// The exit IP the site should see.
    #[arg(long, value_name = "IP", requires = "proxy")]
    proxy_ip: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum YesNo {
    Yes,
    No,
}

impl From<YesNo> for bool {
    fn from(v: YesNo) -> bool {
        matches!(v, YesNo::Yes)
    }
}

/// `credvault lease`.
#[derive(Debug, Args)]
#[command(trailing_var_arg = true)]
pub(crate) struct LeaseArgs {
    /// The credential's name.
    name: String,
    #[command(flatten)]
    target: Target,
    /// A login lease (alone on the account, with the credential's login lock) instead of a
    /// run lease.
    #[arg(long)]
    login: bool,
    /// Wait at most this many seconds for the lease; exit 75 when it was not granted.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    wait: f64,
    /// The lease lasts this many seconds after each heartbeat (sent every third of it); a
    /// `lease` process that dies loses the lease this long after its last heartbeat.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    ttl: f64,
    /// The command to run while holding the lease (after `--`).
    #[arg(required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

fn failed(e: SessionError) -> Failure {
    match e {
        SessionError::Store(s) => fail(s),
        SessionError::WaitTimedOut { .. } => {
            let mut f = Failure::new(e);
            f.code = EXIT_BUSY;
            f
        }
        other => Failure::new(other),
    }
}

/// The vault's sessions: beside it, or in its PostgreSQL database when it is kept there.
pub(crate) fn open(v: &Vault, dir: &Path) -> Result<Sessions, Failure> {
    Sessions::open_in_with(dir, v.store().clone(), &crate::vault::pg_opts()?).map_err(failed)
}

fn seconds(flag: &str, s: f64) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(s).map_err(|_| Failure::usage(format!("{flag}: expected seconds")))
}

fn config_json(c: &SessionConfig) -> serde_json::Value {
    serde_json::to_value(c).unwrap_or_default()
}

fn config_text(name: &str, c: &SessionConfig) -> String {
    let dur =
        |ms: Option<u64>| ms.map_or_else(|| "none".to_owned(), |ms| format!("{}s", ms / 1000));
    let kinds = [
        (c.store.cookies, "cookies"),
        (c.store.local, "local"),
        (c.store.session, "session"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, k)| *k)
    .collect::<Vec<_>>()
    .join(",");
    let proxy = match &c.proxy {
        ProxySetting::Via(v) => v.credential.clone(),
        ProxySetting::Direct => "direct".into(),
        _ => "inherit".into(),
    };
    format!(
        "{name}\n  multiple:       {}\n  max concurrent: {}\n  login lock:     {}\n  idle:           {}\n  absolute:       {}\n  store:          {}\n  proxy:          {proxy}\n",
        if c.multiple { "yes" } else { "no" },
        c.max_concurrent.map_or_else(|| "none".to_owned(), |n| n.to_string()),
        if c.login_lock { "yes" } else { "no" },
        dur(c.idle_ms),
        dur(c.absolute_ms),
        if kinds.is_empty() { "(nothing)" } else { &kinds },
    )
}

/// A Unix-ms time as RFC 3339.
fn when(ms: i64) -> String {
    credvault_audit::Timestamp::from_unix_millis(u64::try_from(ms).unwrap_or(0)).to_string()
}

fn usage(e: SessionError) -> Failure {
    Failure::usage(e)
}

fn apply(mut c: SessionConfig, a: &ConfigArgs) -> Result<SessionConfig, Failure> {
    if let Some(m) = a.multiple {
        c = c.multiple(m.into());
    }
    if let Some(n) = &a.max_concurrent {
        let n = match n.as_str() {
            "none" => None,
            n => Some(
                n.parse::<u32>()
                    .map_err(|_| Failure::usage("--max-concurrent: expected a number or none"))?,
            ),
        };
        c = c.max_concurrent(n);
    }
    if let Some(l) = a.login_lock {
        c = c.login_lock(l.into());
    }
    if let Some(d) = &a.idle {
        c = c.idle(parse_duration(d).map_err(usage)?);
    }
    if let Some(d) = &a.absolute {
        c = c.absolute(parse_duration(d).map_err(usage)?);
    }
    if let Some(s) = &a.store {
        c = c.store(StoreKinds::parse(s).map_err(usage)?);
    }
    if let Some(p) = &a.proxy {
        c = c.proxy(match p.as_str() {
            "direct" => ProxySetting::Direct,
            "inherit" => ProxySetting::Inherit,
            name => {
                let mut via = ProxyVia::new(name);
                if let Some(e) = &a.proxy_env {
                    via = via.environment(e);
                }
                if let Some(r) = &a.proxy_region {
                    via = via.region(r);
                }
                if let Some(ip) = &a.proxy_ip {
                    via = via.target_ip(ip);
                }
                ProxySetting::Via(via)
            }
        });
    }
    c.check().map_err(usage)?;
    Ok(c)
}

/// Checks that a proxy setting names an `http_proxy` credential of the tenant.
fn check_proxy(scope: &Scope<'_>, c: &SessionConfig, env: &str) -> Result<(), Failure> {
    if let ProxySetting::Via(v) = &c.proxy {
        let env = v.environment.as_deref().unwrap_or(env);
        let info = scope.find(&v.credential, env).map_err(fail)?;
        if info.type_name != "http_proxy" {
            return Err(Failure::usage(format!(
                "--proxy: {} is a {} credential, not an http_proxy",
                v.credential, info.type_name
            )));
        }
    }
    Ok(())
}

pub(crate) fn run(args: &VaultArgs, cmd: SessionCommand) -> Result<Output, Failure> {
    let dir = args.dir();
    with_vault(args, |v| {
        let s = open(v, &dir)?;
        match cmd {
            SessionCommand::Config(a) => {
                let (scope, info) = find(v, &a.target, &a.name, args.actor())?;
                let current = s.config(&scope, &info.id).map_err(failed)?;
                let changed = a.multiple.is_some()
                    || a.max_concurrent.is_some()
                    || a.login_lock.is_some()
                    || a.idle.is_some()
                    || a.absolute.is_some()
                    || a.store.is_some()
                    || a.proxy.is_some();
                let c = if changed {
                    let c = apply(current, &a)?;
                    check_proxy(&scope, &c, &a.target.environment)?;
                    s.configure(&scope, &info.id, &c).map_err(failed)?;
                    c
                } else {
                    current
                };
                Ok(Output::Text {
                    text: config_text(&info.name, &c),
                    json: config_json(&c),
                })
            }
            SessionCommand::Save(a) => {
                let (scope, info) = find(v, &a.target, &a.name, args.actor())?;
                let mut text = Zeroizing::new(String::new());
                std::io::stdin()
                    .take(MAX_STATE_LEN as u64 + 1)
                    .read_to_string(&mut text)
                    .map_err(|e| Failure::new(format!("reading the state from stdin: {e}")))?;
                let state = BrowserState::parse(&text).map_err(failed)?;
                let saved = s
                    .save(&scope, &info.id, &a.profile, &state)
                    .map_err(failed)?;
                Ok(Output::Text {
                    text: format!(
                        "saved {} (profile {}, version {}): {} cookies, {} origins\n",
                        info.name,
                        saved.profile,
                        saved.version,
                        state.cookies(),
                        state.origins()
                    ),
                    json: json!({"name": info.name, "profile": saved.profile,
                        "version": saved.version, "expires_at": saved.expires_at}),
                })
            }
            SessionCommand::Load(a) => {
                let (scope, info) = find(v, &a.target, &a.name, args.actor())?;
                match s.load(&scope, &info.id, &a.profile).map_err(failed)? {
                    Some(state) => {
                        let mut b =
                            Zeroizing::new(Vec::with_capacity(state.expose_json().len() + 1));
                        b.extend_from_slice(state.expose_json().as_bytes());
                        b.push(b'\n');
                        Ok(Output::Bytes(b))
                    }
                    None => Err(Failure {
                        code: EXIT_NO_SESSION,
                        ..Failure::new(format!(
                            "no saved session for {} (profile {}): none was saved, or it expired",
                            info.name, a.profile
                        ))
                    }),
                }
            }
            SessionCommand::List(a) => {
                let scope = v
                    .store()
                    .tenant(&tenant_id(&a.tenant)?, args.actor())
                    .map_err(fail)?;
                let mut text = String::new();
                let mut rows = Vec::new();
                for i in s.list(&scope).map_err(failed)? {
                    let (name, env) = scope
                        .get(&i.credential)
                        .map(|c| (c.name, c.environment))
                        .unwrap_or_else(|_| ("(deleted)".into(), String::new()));
                    text.push_str(&format!(
                        "{name}\t{env}\t{}\tv{}\t{}\n",
                        i.profile,
                        i.version,
                        i.expires_at.map_or_else(
                            || "never expires".into(),
                            |e| format!(
                                "expires {}",
                                credvault_audit::Timestamp::from_unix_millis(
                                    u64::try_from(e).unwrap_or(0)
                                )
                            )
                        ),
                    ));
                    rows.push(
                        json!({"name": name, "environment": env, "profile": i.profile,
                        "version": i.version, "created_at": i.created_at,
                        "last_used_at": i.last_used_at, "expires_at": i.expires_at}),
                    );
                }
                Ok(Output::Text {
                    text,
                    json: json!(rows),
                })
            }
            SessionCommand::Show(a) => {
                let (scope, info) = find(v, &a.target, &a.name, args.actor())?;
                let cfg = s.config(&scope, &info.id).map_err(failed)?;
                let mut text = config_text(&info.name, &cfg);
                let mut rows = Vec::new();
                for i in s.list(&scope).map_err(failed)? {
                    if i.credential != info.id {
                        continue;
                    }
                    text.push_str(&format!(
                        "  profile {}: version {}, logged in {}, last used {}, {}\n",
                        i.profile,
                        i.version,
                        when(i.created_at),
                        when(i.last_used_at),
                        i.expires_at.map_or_else(
                            || "never expires".into(),
                            |e| format!("expires {}", when(e))
                        ),
                    ));
                    rows.push(json!({"profile": i.profile, "version": i.version,
                        "created_at": i.created_at, "last_used_at": i.last_used_at,
                        "expires_at": i.expires_at}));
                }
                if rows.is_empty() {
                    text.push_str("  no saved state\n");
                }
                Ok(Output::Text {
                    text,
                    json: json!({"name": info.name, "config": config_json(&cfg), "sessions": rows}),
                })
            }
            SessionCommand::Rm(a) => {
                let (scope, info) = find(v, &a.target, &a.name, args.actor())?;
                let n = s
                    .remove(&scope, &info.id, a.profile.as_deref())
                    .map_err(failed)?;
                Ok(Output::Text {
                    text: format!("removed {n} saved session(s) of {}\n", info.name),
                    json: json!({"name": info.name, "removed": n}),
                })
            }
            SessionCommand::Sweep => {
                let n = s.sweep().map_err(failed)?;
                Ok(Output::Text {
                    text: format!("removed {n} expired session(s)\n"),
                    json: json!({"removed": n}),
                })
            }
        }
    })
}

/// `credvault lease NAME [--login] [--wait S] -- COMMAND...`: holds a lease while the command
/// runs (like `flock`), renewing it every third of its lifetime; exits with the command's
/// status, or 75 when the lease was not granted in time.
pub(crate) fn lease(args: &VaultArgs, a: LeaseArgs) -> Result<Output, Failure> {
    let dir = args.dir();
    let wait = seconds("--wait", a.wait)?;
    let ttl = seconds("--ttl", a.ttl)?;
    let kind = if a.login {
        LeaseKind::Login
    } else {
        LeaseKind::Run
    };
    with_vault(args, |v| {
        let s = open(v, &dir)?;
        let (scope, info) = find(v, &a.target, &a.name, args.actor())?;
        let mut lease = s
            .acquire(&scope, &info.id, kind, ttl, wait)
            .map_err(failed)?;
        let (program, rest) = a
            .command
            .split_first()
            .ok_or_else(|| Failure::usage("a command is required after --"))?;
        let mut child = std::process::Command::new(program)
            .args(rest)
            .env("CREDVAULT_LEASE_ID", lease.id())
            .spawn()
            .map_err(|e| Failure::new(format!("cannot start {program}: {e}")))?;
        let beat = (ttl / 3).max(Duration::from_millis(50));
        let mut last_beat = std::time::Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(e) => return Err(Failure::new(format!("waiting for {program}: {e}"))),
            }
            std::thread::sleep(Duration::from_millis(20).min(beat));
            if last_beat.elapsed() >= beat {
                last_beat = std::time::Instant::now();
                if let Err(e) = lease.renew() {
                    // Another process may hold the account now: stop the command.
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(failed(e));
                }
            }
        };
        lease.release().map_err(failed)?;
        Ok(Output::Exit(crate::process::exit_code(status)))
    })
}
