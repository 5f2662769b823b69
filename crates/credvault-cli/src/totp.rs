//! `credvault totp ...`: one-time codes for scripts.
//!
//! The secret comes from `--secret BASE32`, `--secret @FILE`, `--uri otpauth://...|steam://...`,
//! or the environment variable `CREDVAULT_TOTP_SECRET` (base32 or a URI), so it need not appear in
//! argv.

use std::io::Read;

use clap::{Args, Subcommand};
use credvault_totp::{extract_code, Algorithm, Kind, Otp, SystemClock, TotpSecret};
use serde_json::json;
use zeroize::Zeroizing;

use crate::{Failure, Output};

/// Environment variable holding the secret (base32 or URI) when neither flag is given.
pub(crate) const SECRET_ENV: &str = "CREDVAULT_TOTP_SECRET";

/// `credvault totp NAME [--tenant T] [--env E]` or `credvault totp SUBCOMMAND`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct TotpArgs {
    #[command(subcommand)]
    command: Option<TotpCommand>,
    /// A vault credential with an authenticator key: print its current code (and audit it).
    #[arg(value_name = "NAME")]
    name: Option<String>,
    #[command(flatten)]
    vault_target: crate::vault::TotpNameArgs,
}

pub(crate) fn run_args(
    args: TotpArgs,
    vault: &crate::vault::VaultArgs,
    json_out: bool,
) -> Result<Output, Failure> {
    match (args.command, args.name) {
        (Some(cmd), _) => run(cmd),
        (None, Some(name)) => crate::vault::totp(vault, &name, args.vault_target, json_out),
        (None, None) => Err(Failure::usage(
            "give a credential NAME or a subcommand (see `credvault totp --help`)",
        )),
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum TotpCommand {
    /// Print the current code (or the code at --at).
    Code {
        #[command(flatten)]
        otp: OtpArgs,
        /// Unix time to generate for (default now).
        #[arg(long, value_name = "UNIX_SECONDS")]
        at: Option<u64>,
    },
    /// Check a code: exit 0 if valid, 1 if not.
    Verify {
        #[command(flatten)]
        otp: OtpArgs,
        /// The code to check (spaces and dashes ignored).
        #[arg(long, allow_hyphen_values = true)]
        code: String,
        /// Steps accepted either side of the current one.
        #[arg(long, default_value_t = credvault_totp::DEFAULT_SKEW)]
        skew: u32,
        /// Unix time to verify at (default now).
        #[arg(long, value_name = "UNIX_SECONDS")]
        at: Option<u64>,
    },
    /// Print an otpauth:// URI for enrolling an authenticator app.
    Uri {
        #[command(flatten)]
        otp: OtpArgs,
        /// Issuer label (service name).
        #[arg(long)]
        issuer: Option<String>,
        /// Account label (user name or email).
        #[arg(long)]
        account: Option<String>,
    },
    /// Read an email or SMS on stdin and print the one-time code in it (exit 1 if none).
    Extract,
}

#[derive(Debug, Args)]
pub(crate) struct OtpArgs {
    /// @FILE holding the base32 key, or - for stdin (never the key itself: argv is visible
    /// to other users). Default: CREDVAULT_TOTP_SECRET.
    #[arg(
        long,
        value_name = "@FILE|-",
        allow_hyphen_values = true,
        conflicts_with = "uri"
    )]
    secret: Option<String>,
    /// @FILE (or - for stdin) holding an otpauth://totp, otpauth://hotp or steam:// URI,
    /// instead of --secret (the URI holds the key).
    #[arg(long, value_name = "@FILE|-", allow_hyphen_values = true)]
    uri: Option<String>,
    /// Hash algorithm: SHA1, SHA256 or SHA512.
    #[arg(long, default_value = "SHA1")]
    algorithm: String,
    /// Code length, 6 to 8.
    #[arg(long, default_value_t = 6)]
    digits: u8,
    /// Step length in seconds.
    #[arg(long, default_value_t = 30)]
    period: u64,
}

impl OtpArgs {
    fn load(&self) -> Result<Otp, Failure> {
        // A key or a URI (which holds the key) is read from a file, stdin or the environment,
        // never taken from argv, where other users see it in `ps`.
        let from = |flag: &str, v: &str| -> Result<Zeroizing<String>, Failure> {
            if v == "-" {
                let mut t = Zeroizing::new(String::new());
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)
                    .map_err(|e| Failure::new(format!("{flag} -: cannot read stdin: {e}")))?;
                return Ok(t);
            }
            match v.strip_prefix('@') {
                Some(path) => Ok(Zeroizing::new(
                    std::fs::read_to_string(path)
                        .map_err(|e| Failure::new(format!("{flag} @{path}: {e}")))?,
                )),
                None => Err(Failure::usage(format!(
                    "{flag} takes @FILE or - (stdin): an authenticator key on the command line \
                     is seen by other users in `ps` and stays in shell history (or set {SECRET_ENV})"
                ))),
            }
        };
        let text: Zeroizing<String> = match (&self.secret, &self.uri) {
            (_, Some(uri)) => from("--uri", uri)?,
            (Some(s), None) => from("--secret", s)?,
            (None, None) => Zeroizing::new(std::env::var(SECRET_ENV).map_err(|_| {
                Failure::new(format!(
                    "no secret: pass --secret, --uri, or set {SECRET_ENV}"
                ))
            })?),
        };
        let text = text.trim();
        if text.contains("://") {
            return Otp::from_uri(text).map_err(Failure::new);
        }
        let secret = TotpSecret::parse(text).map_err(Failure::new)?;
        let alg = Algorithm::parse(&self.algorithm).map_err(Failure::new)?;
        Otp::totp(secret, alg, self.digits, self.period).map_err(Failure::new)
    }
}

fn now() -> u64 {
    credvault_totp::Clock::now(&SystemClock)
}

pub(crate) fn run(cmd: TotpCommand) -> Result<Output, Failure> {
    match cmd {
        TotpCommand::Code { otp, at } => {
            let otp = otp.load()?;
            let t = at.unwrap_or_else(now);
            let code = match otp.kind() {
                Kind::Hotp { counter } => otp.hotp_code(counter),
                _ => otp.code_at(t),
            };
            let value = Zeroizing::new(code.to_string());
            Ok(Output::Text {
                text: format!("{}\n", value.as_str()),
                json: json!({ "code": value.as_str(), "step": code.step, "remaining": code.remaining_at(t) }),
            })
        }
        TotpCommand::Verify {
            otp,
            code,
            skew,
            at,
        } => {
            let otp = otp.load()?;
            let step = match otp.kind() {
                Kind::Hotp { counter } => otp.verify_hotp(&code, counter, skew),
                _ => otp.verify_at(&code, at.unwrap_or_else(now), skew),
            }
            .map_err(Failure::new)?;
            Ok(Output::Text {
                text: format!("valid (step {step})\n"),
                json: json!({ "valid": true, "step": step }),
            })
        }
        TotpCommand::Uri {
            otp,
            issuer,
            account,
        } => {
            let mut o = otp.load()?;
            if issuer.is_some() || account.is_some() {
                let issuer = issuer.or_else(|| o.issuer().map(str::to_owned));
                let account = account.or_else(|| o.account().map(str::to_owned));
                o = o.with_labels(issuer, account);
            }
            let uri = o.to_uri();
            Ok(Output::Text {
                text: format!("{}\n", uri.as_str()),
                json: json!({ "uri": uri.as_str() }),
            })
        }
        TotpCommand::Extract => {
            let mut msg = Vec::new();
            std::io::stdin()
                .lock()
                .take(credvault_totp::MAX_MESSAGE_LEN as u64)
                .read_to_end(&mut msg)
                .map_err(|e| Failure::new(format!("reading stdin: {e}")))?;
            let text = String::from_utf8_lossy(&msg);
            let found =
                extract_code(&text).ok_or_else(|| Failure::new("no one-time code found"))?;
            Ok(Output::Text {
                text: format!("{}\n", found.code),
                json: json!({ "code": found.code, "reason": format!("{:?}", found.reason) }),
            })
        }
    }
}
