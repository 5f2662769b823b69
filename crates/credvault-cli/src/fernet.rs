//! `credvault fernet ...`: Fernet tokens for scripts, byte-compatible with Python.
//!
//! Keys come from `--key @FILE` (repeatable: the first encrypts, all decrypt) or
//! the environment variable `CREDVAULT_FERNET_KEY` (comma-separated for several keys, as
//! Airflow's `fernet_key` setting), so a key need not appear in argv.

use std::io::Read;

use clap::{Args, Subcommand};
use credvault_token::{Fernet, MultiFernet, MAX_PLAINTEXT_LEN, MAX_TOKEN_LEN};
use serde_json::json;
use zeroize::Zeroizing;

use crate::{Failure, Output};

/// Environment variable holding the key(s) when `--key` is not given.
pub(crate) const KEY_ENV: &str = "CREDVAULT_FERNET_KEY";

#[derive(Debug, Subcommand)]
pub(crate) enum FernetCommand {
    /// Print a new random key (URL-safe base64 of 32 bytes).
    Genkey,
    /// Encrypt stdin (raw bytes) into a token, printed with a newline.
    Encrypt {
        #[command(flatten)]
        keys: KeyArgs,
        /// Timestamp to put in the token (seconds since the Unix epoch); default now.
        #[arg(long, value_name = "UNIX_SECONDS")]
        at: Option<u64>,
    },
    /// Decrypt a token read from stdin (surrounding whitespace ignored); plaintext bytes on stdout.
    Decrypt {
        #[command(flatten)]
        keys: KeyArgs,
        /// Refuse tokens older than this many seconds (and more than 60 s in the future).
        #[arg(long, value_name = "SECONDS")]
        ttl: Option<u64>,
        /// Check the TTL as at this time instead of now.
        #[arg(long, value_name = "UNIX_SECONDS")]
        at: Option<u64>,
    },
    /// Re-encrypt a token from stdin under the first key, keeping its timestamp.
    Rotate {
        #[command(flatten)]
        keys: KeyArgs,
    },
}

#[derive(Debug, Args)]
pub(crate) struct KeyArgs {
    /// @FILE holding a Fernet key (never the key itself: argv is visible to other users).
    /// Repeat for rotation: the first is primary.
    /// Default: the CREDVAULT_FERNET_KEY environment variable (comma-separated).
    // URL-safe base64 keys start with '-' one time in 64: never read that as a flag.
    #[arg(long = "key", value_name = "@FILE", allow_hyphen_values = true)]
    keys: Vec<String>,
}

impl KeyArgs {
    fn load(&self) -> Result<MultiFernet, Failure> {
        let mut texts: Vec<Zeroizing<String>> = Vec::new();
        if self.keys.is_empty() {
            let v =
                Zeroizing::new(std::env::var(KEY_ENV).map_err(|_| {
                    Failure::new(format!("no key: pass --key @FILE or set {KEY_ENV}"))
                })?);
            texts.extend(
                v.split(',')
                    .filter(|k| !k.trim().is_empty())
                    .map(|k| Zeroizing::new(k.trim().to_owned())),
            );
        }
        for k in &self.keys {
            match k.strip_prefix('@') {
                Some(path) => {
                    let text = Zeroizing::new(
                        std::fs::read_to_string(path)
                            .map_err(|e| Failure::new(format!("--key @{path}: {e}")))?,
                    );
                    texts.push(Zeroizing::new(text.trim().to_owned()));
                }
                None => {
                    return Err(Failure::usage(format!(
                        "--key takes @FILE: a key on the command line is seen by other users \
                         in `ps` and stays in shell history (or set {KEY_ENV})"
                    )))
                }
            }
        }
        let keys = texts
            .iter()
            .enumerate()
            .map(|(i, t)| Fernet::new(t).map_err(|e| Failure::new(format!("key {}: {e}", i + 1))))
            .collect::<Result<Vec<_>, _>>()?;
        MultiFernet::new(keys).map_err(|e| Failure::new(format!("no key: {e}")))
    }
}

fn read_stdin(limit: usize, what: &str) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let mut buf = Zeroizing::new(Vec::new());
    std::io::stdin()
        .lock()
        .take(limit as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Failure::new(format!("reading {what} from stdin: {e}")))?;
    if buf.len() > limit {
        return Err(Failure::new(format!(
            "{what} on stdin exceeds {limit} bytes"
        )));
    }
    Ok(buf)
}

fn read_token() -> Result<Zeroizing<String>, Failure> {
    let raw = read_stdin(MAX_TOKEN_LEN + 4096, "token")?;
    let text = core::str::from_utf8(&raw).map_err(|_| Failure::new("invalid or expired token"))?;
    Ok(Zeroizing::new(text.trim().to_owned()))
}

fn token_output(token: String) -> Output {
    Output::Text {
        text: format!("{token}\n"),
        json: json!({ "token": token }),
    }
}

pub(crate) fn run(cmd: FernetCommand, json_out: bool) -> Result<Output, Failure> {
    match cmd {
        FernetCommand::Genkey => {
            let key = Fernet::generate().map_err(Failure::new)?;
            let text = key.export_secret();
            Ok(Output::Bytes(Zeroizing::new(if json_out {
                format!("{}\n", json!({ "key": text.as_str() })).into_bytes()
            } else {
                format!("{}\n", text.as_str()).into_bytes()
            })))
        }
        FernetCommand::Encrypt { keys, at } => {
            let multi = keys.load()?;
            let pt = read_stdin(MAX_PLAINTEXT_LEN, "plaintext")?;
            let token = match at {
                Some(ts) => multi.encrypt_at(&pt, ts),
                None => multi.encrypt(&pt),
            }
            .map_err(Failure::new)?;
            Ok(token_output(token))
        }
        FernetCommand::Decrypt { keys, ttl, at } => {
            let multi = keys.load()?;
            let token = read_token()?;
            let now = at.unwrap_or_else(credvault_token::unix_now);
            let pt = multi.decrypt_at(&token, ttl, now).map_err(Failure::new)?;
            if json_out {
                let text = core::str::from_utf8(pt.expose_secret()).ok();
                let mut doc = json!({ "plaintext": text });
                let line = crate::json_line(&doc);
                crate::wipe_json(&mut doc);
                return Ok(Output::Bytes(line));
            }
            Ok(Output::Bytes(Zeroizing::new(pt.expose_secret().to_vec())))
        }
        FernetCommand::Rotate { keys } => {
            let multi = keys.load()?;
            let token = read_token()?;
            Ok(token_output(multi.rotate(&token).map_err(Failure::new)?))
        }
    }
}
