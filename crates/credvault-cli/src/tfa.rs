//! `credvault tfa`: email and SMS second factors (crate credvault-tfa).

use std::time::Duration;

use clap::{Args, Subcommand};
use credvault_tfa::{Rules, Tfa, TfaError};
use serde_json::json;
use zeroize::Zeroizing;

use crate::vault::{fail, find, with_vault, Target, VaultArgs, EXIT_BUSY};
use crate::{Failure, Output};

/// The domain of receiving addresses when `--domain` is not given.
pub(crate) const DOMAIN_ENV: &str = "CREDVAULT_TFA_DOMAIN";

#[derive(Debug, Subcommand)]
pub(crate) enum TfaCommand {
    /// Print a credential's receiving address (made on first use): point the site's 2FA
    /// email there.
    Address(AddressArgs),
    /// Show or set which messages count for a credential: senders, subject, the phone number
    /// its SMS go to (no option: show them).
    Rules(RulesArgs),
    /// Print the next unused code received for a credential (oldest first), waiting for one;
    /// exit 75 when none arrived within `--timeout`.
    Wait(WaitArgs),
    /// Poll an `imap_mailbox` credential's mailbox once: unread mail to credentials'
    /// addresses gives their codes; every unread message is marked read (`serve
    /// --imap-poll` does this every `--imap-interval`).
    Poll(PollArgs),
}

#[derive(Debug, Args)]
pub(crate) struct PollArgs {
    /// The `imap_mailbox` credential's name.
    name: String,
    #[command(flatten)]
    target: Target,
    /// Also trust the certificates in this PEM file for IMAPS (a private CA).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<std::path::PathBuf>,
}

/// The IMAPS trust: the system's roots and `ca_file`'s certificates.
pub(crate) fn trust(
    ca_file: Option<&std::path::Path>,
) -> Result<credvault_tfa::ImapTrust, Failure> {
    let t = credvault_tfa::ImapTrust::default();
    match ca_file {
        None => Ok(t),
        Some(p) => {
            let pem = std::fs::read(p)
                .map_err(|e| Failure::usage(format!("--ca-file {}: {e}", p.display())))?;
            t.with_pem(&pem)
                .map_err(|e| Failure::usage(format!("--ca-file {}: {e}", p.display())))
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct AddressArgs {
    /// The credential's name.
    name: String,
    #[command(flatten)]
    target: Target,
    /// The mail domain whose MX (or forwarding) reaches `serve --smtp-listen`.
    #[arg(long, env = DOMAIN_ENV, default_value = "localhost")]
    domain: String,
}

#[derive(Debug, Args)]
pub(crate) struct RulesArgs {
    /// The credential's name.
    name: String,
    #[command(flatten)]
    target: Target,
    /// A sender allowed: an address or `@domain` (repeat for more).
    #[arg(long = "from", value_name = "SENDER")]
    from: Vec<String>,
    /// Text the subject must contain.
    #[arg(long, value_name = "TEXT")]
    subject: Option<String>,
    /// The phone number (E.164) the site sends this credential's SMS to.
    #[arg(long, value_name = "NUMBER")]
    phone: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct WaitArgs {
    /// The credential's name.
    name: String,
    #[command(flatten)]
    target: Target,
    /// Wait at most this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    timeout: f64,
    /// Only a code that arrived at or after this time (RFC 3339; default: any code still kept).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
}

fn failed(e: TfaError) -> Failure {
    match e {
        TfaError::Store(s) => fail(s),
        TfaError::Timeout { .. } => {
            let mut f = Failure::new(e);
            f.code = EXIT_BUSY;
            f
        }
        TfaError::Invalid { .. } => Failure::usage(e),
        other => Failure::new(other),
    }
}

/// The vault's two-factor records: beside it, or in its PostgreSQL database.
pub(crate) fn open(v: &credvault_store::Vault, dir: &std::path::Path) -> Result<Tfa, Failure> {
    Tfa::open_in_with(dir, v.store().clone(), &crate::vault::pg_opts()?).map_err(failed)
}

fn rules_json(r: &Rules) -> serde_json::Value {
    serde_json::to_value(r).unwrap_or_default()
}

pub(crate) fn run(args: &VaultArgs, cmd: TfaCommand) -> Result<Output, Failure> {
    let dir = args.dir();
    with_vault(args, |v| {
        let tfa = open(v, &dir)?;
        match cmd {
            TfaCommand::Address(a) => {
                let (scope, info) = find(v, &a.target, &a.name, args.actor())?;
                let address = tfa.address(&scope, &info.id, &a.domain).map_err(failed)?;
                Ok(Output::Text {
                    text: format!("{address}\n"),
                    json: json!({"name": info.name, "address": address}),
                })
            }
            TfaCommand::Rules(a) => {
                let (scope, info) = find(v, &a.target, &a.name, args.actor())?;
                let mut rules = tfa.rules(&scope, &info.id).map_err(failed)?;
                if !a.from.is_empty() || a.subject.is_some() || a.phone.is_some() {
                    if !a.from.is_empty() {
                        rules.from.clone_from(&a.from);
                    }
                    if a.subject.is_some() {
                        rules.subject.clone_from(&a.subject);
                    }
                    if a.phone.is_some() {
                        rules.phone.clone_from(&a.phone);
                    }
                    tfa.set_rules(&scope, &info.id, &rules).map_err(failed)?;
                }
                Ok(Output::Text {
                    text: format!(
                        "{}\n  from:    {}\n  subject: {}\n  phone:   {}\n",
                        info.name,
                        if rules.from.is_empty() {
                            "any".into()
                        } else {
                            rules.from.join(", ")
                        },
                        rules.subject.as_deref().unwrap_or("any"),
                        rules.phone.as_deref().unwrap_or("none"),
                    ),
                    json: rules_json(&rules),
                })
            }
            TfaCommand::Poll(a) => {
                let trust = trust(a.ca_file.as_deref())?;
                let (scope, info) = find(v, &a.target, &a.name, args.actor())?;
                let r = tfa.poll_imap(&scope, &info.id, &trust).map_err(failed)?;
                Ok(Output::Text {
                    text: format!(
                        "{}: {} unread message(s), {} code(s) stored, {} without a code\n",
                        info.name, r.messages, r.stored, r.ignored
                    ),
                    json: json!({"name": info.name, "messages": r.messages,
                        "stored": r.stored, "ignored": r.ignored}),
                })
            }
            TfaCommand::Wait(a) => {
                let (scope, info) = find(v, &a.target, &a.name, args.actor())?;
                let timeout = Duration::try_from_secs_f64(a.timeout)
                    .map_err(|_| Failure::usage("--timeout: expected seconds"))?;
                let since = match &a.since {
                    Some(t) => {
                        let ts: credvault_audit::Timestamp = t
                            .parse()
                            .map_err(|e| Failure::usage(format!("--since: {e}")))?;
                        i64::try_from(ts.as_unix_millis()).unwrap_or(i64::MAX)
                    }
                    None => 0,
                };
                let code = tfa
                    .wait_for_code(&scope, &info.id, since, timeout)
                    .map_err(failed)?;
                let mut b = Zeroizing::new(Vec::with_capacity(code.expose_secret().len() + 1));
                b.extend_from_slice(code.expose_secret().as_bytes());
                b.push(b'\n');
                Ok(Output::Bytes(b))
            }
        }
    })
}
