//! `credvault`: the command-line tool composing the credvault crates.
//!
//! Output discipline: a command builds its whole output first and writes it to stdout only on
//! success; on failure it prints one line, `credvault: <reason>`, to stderr and exits non-zero,
//! with nothing on stdout.
#![forbid(unsafe_code)]

mod audit;
mod backup;
mod dlp;
mod fernet;
mod gateway;
mod keychain;
mod master;
mod process;
mod quickstart;
mod schema;
mod session;
mod term;
mod tfa;
mod totp;
mod vault;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// credvault: encrypted credential vault tools.
#[derive(Debug, Parser)]
#[command(name = "credvault", version, about, long_about = None)]
struct Cli {
    /// Print machine-readable JSON instead of text (for commands that print data).
    #[arg(long, global = true)]
    json: bool,

    #[command(flatten)]
    vault: vault::VaultArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Walk through the vault end to end on a throwaway vault: add a website login with a
    /// TOTP key, show it masked, reveal a field, generate a code, rotate both keys, verify the
    /// audit log.
    ///
    /// With `--vault DIR` the vault is kept in DIR (which must not hold one).
    Quickstart,
    /// Create a vault: directory, database, audit key file (owner-only), audit log, and the
    /// `default` tenant; the master key in a key file outside the directory (the config
    /// directory; `master.uri` names it) or where `--master URI` says.
    Init(vault::InitArgs),
    /// Tenants (workspaces), each with its own data key.
    #[command(subcommand)]
    Tenant(vault::TenantCommand),
    /// Add a credential (secret fields from a prompt, stdin or @FILE; never needed on argv).
    Add(vault::AddArgs),
    /// List credentials (metadata only).
    List(vault::ListArgs),
    /// Show a credential with its secrets masked.
    Show(vault::NameArgs),
    /// Print one field of a credential (exactly the value and a newline); audited.
    Reveal(vault::RevealArgs),
    /// Change fields or metadata of a credential.
    Update(vault::UpdateArgs),
    /// Delete a credential (audited first, sealed data overwritten).
    Rm(vault::RmArgs),
    /// Test a credential against its service (the type's declared test).
    Test(vault::TestArgs),
    /// Verify the whole vault: the audit log, every record's MAC, and the records against the
    /// log (rolled back, deleted or added outside the vault). Exit 0 only when all agree;
    /// `--json` for the report.
    Verify,
    /// Move this SQLite vault into a PostgreSQL database: every row copied verbatim (nothing
    /// decrypted), the audit log's chain continued in the database, in one transaction;
    /// checked before and verified after. Run it again if it was stopped: it resumes.
    MigrateStorage(vault::MigrateArgs),
    /// Write a backup: a consistent snapshot of every row (sealed, verbatim) and of the whole
    /// audit chain, authenticated under the audit key. It holds no key.
    Backup(backup::BackupArgs),
    /// Make a new vault (`--vault DIR`) from a backup: verified before anything is written and
    /// after; the audit chain continues; every data key is rotated. Needs the vault's keys
    /// (`--keys-from DIR`, or already in DIR). A PostgreSQL vault's backup restores as SQLite:
    /// then `migrate-storage`.
    Restore(backup::RestoreArgs),
    /// Rotate the master key or a tenant's data key.
    #[command(subcommand)]
    Rotate(vault::RotateCommand),
    /// Check the vault's master-key provider end to end: reachable, a key generated, wrapped
    /// and unwrapped, (PKCS#11) its key objects sensitive and not extractable, and the vault
    /// opening with it. Exit 0 only when every check passes.
    Doctor,
    /// Fernet tokens, interoperable with Python `cryptography` (genkey, encrypt, decrypt, rotate).
    #[command(subcommand)]
    Fernet(fernet::FernetCommand),
    /// One-time codes: `totp NAME` prints a vault credential's current code; the subcommands
    /// generate, verify, build otpauth URIs and extract codes from messages.
    Totp(totp::TotpArgs),
    /// Credential types: list, show (or export as JSON Schema), validate a credential file,
    /// add one to the vault.
    #[command(subcommand, name = "type")]
    Type(schema::TypeCommand),
    /// Keep secrets out of text: mask known secrets in a stream, scan for cards, SSNs and keys.
    #[command(subcommand)]
    Dlp(dlp::DlpCommand),
    /// Tamper-evident audit logs: verify, show, export (the vault's own log when no file is
    /// given); generate an audit key.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Run a command with the secrets its environment references (`VAR=cv://NAME/FIELD`,
    /// `keychain://SERVICE/ACCOUNT`, `{{ ... }}` inside a value; also from `--env-file`s),
    /// masking them in its output; passes signals on and exits with its status.
    Run(process::RunArgs),
    /// Render a template's `{{ cv://... }}` references to stdout or an owner-only file.
    Inject(process::InjectArgs),
    /// Copy stdin to stdout with the values of the given references masked (for pipelines
    /// that cannot use `run`).
    Mask(process::MaskArgs),
    /// Serve the vault over TLS (crate credvault-gateway): each `--host` name serves one
    /// tenant, clients present API keys (`credvault apikey create`), every request is rate
    /// limited and audited. SIGHUP reloads the certificate; SIGTERM finishes requests in
    /// flight and stops.
    Serve(gateway::ServeArgs),
    /// API keys for `serve`: create (shown once), list, revoke.
    #[command(subcommand)]
    Apikey(gateway::ApikeyCommand),
    /// Saved browser sessions (Playwright storageState) per credential and profile, sealed
    /// and expiring: config, save, load, list, rm, sweep.
    #[command(subcommand)]
    Session(session::SessionCommand),
    /// Run a command while holding a lease on a credential's account (like `flock`): runs
    /// share it up to the credential's limit, a `--login` lease is alone; exits 75 when the
    /// lease was not granted within `--wait`.
    Lease(session::LeaseArgs),
    /// Email and SMS second factors: a credential's receiving address, its rules, and the
    /// next code received for it (`serve --smtp-listen` runs the receiver).
    #[command(subcommand)]
    Tfa(tfa::TfaCommand),
}

/// The bytes printed for a command's output (`json` as one line with `--json`, else `text`);
/// both inputs are wiped.
fn render(
    json_out: bool,
    text: String,
    mut json: serde_json::Value,
) -> zeroize::Zeroizing<Vec<u8>> {
    let mut text = zeroize::Zeroizing::new(text);
    let out = if json_out {
        json_line(&json)
    } else {
        zeroize::Zeroizing::new(std::mem::take(&mut *text).into_bytes())
    };
    wipe_json(&mut json);
    out
}

/// `v` as one line of JSON in a buffer sized exactly, so that no growing buffer leaves a copy
/// behind, wiped when dropped.
pub(crate) fn json_line(v: &serde_json::Value) -> zeroize::Zeroizing<Vec<u8>> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    // Writing a `Value` into memory cannot fail.
    let _ = serde_json::to_writer(&mut n, v);
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(n.0 + 1));
    let _ = serde_json::to_writer(&mut *out, v);
    out.push(b'\n');
    out
}

/// Wipes every string in a JSON value (the store's, shared by the commands).
pub(crate) use credvault_store::wipe_json;

/// What a command produced: text for people and JSON for scripts, or raw bytes (a decrypted
/// secret, written as is and wiped afterwards).
pub(crate) enum Output {
    Text {
        text: String,
        json: serde_json::Value,
    },
    Bytes(zeroize::Zeroizing<Vec<u8>>),
    /// Nothing more to print (the command wrote its own output); exit with this code.
    Exit(u8),
    /// A report printed on stdout, followed by a non-zero exit code (a scan that found
    /// something to block).
    Report {
        text: String,
        json: serde_json::Value,
        code: u8,
    },
}

/// A command failure: one line for stderr, and the exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) message: String,
    pub(crate) code: u8,
    /// Further lines (a validation with several errors prints one per line).
    pub(crate) more: Vec<String>,
}

impl Failure {
    pub(crate) fn new(message: impl std::fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            code: 1,
            more: Vec::new(),
        }
    }

    /// A usage error (exit code 2).
    pub(crate) fn usage(message: impl std::fmt::Display) -> Self {
        Self {
            code: 2,
            ..Self::new(message)
        }
    }

    /// Several lines, each printed as its own `credvault: ...` line (exit code 1).
    pub(crate) fn lines(mut lines: Vec<String>) -> Self {
        let first = if lines.is_empty() {
            String::from("failed")
        } else {
            lines.remove(0)
        };
        Self {
            more: lines,
            ..Self::new(first)
        }
    }
}

/// `--help` and `--version` print to stdout and succeed; every other parse error becomes one
/// line on stderr (clap's first line, plus a pointer to `--help`) and exit code 2.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        print!("{e}");
        return ExitCode::SUCCESS;
    }
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = writeln!(
            std::io::stderr(),
            "credvault: a subcommand is required (see `credvault --help`)"
        );
        return ExitCode::from(2);
    }
    let rendered = e.render().to_string();
    let first = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments");
    let first = first.trim().trim_start_matches("error:").trim();
    let _ = writeln!(
        std::io::stderr(),
        "credvault: {first} (see `credvault --help`)"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let v = &cli.vault;
    let result = match cli.command {
        Command::Quickstart => quickstart::run(v.vault.as_deref()),
        Command::Init(a) => vault::init(v, a),
        Command::Tenant(cmd) => vault::tenant(v, cmd),
        Command::Add(a) => vault::add(v, a),
        Command::List(a) => vault::list(v, a),
        Command::Show(a) => vault::show(v, a),
        Command::Reveal(a) => vault::reveal(v, a, cli.json),
        Command::Update(a) => vault::update(v, a),
        Command::Rm(a) => vault::rm(v, a),
        Command::Test(a) => vault::test(v, a),
        Command::Verify => vault::verify(v),
        Command::MigrateStorage(a) => vault::migrate_storage(v, a),
        Command::Backup(a) => backup::backup(v, a),
        Command::Restore(a) => backup::restore(v, a),
        Command::Rotate(cmd) => vault::rotate(v, cmd),
        Command::Doctor => master::doctor(&v.dir()),
        Command::Fernet(cmd) => fernet::run(cmd, cli.json),
        Command::Totp(args) => totp::run_args(args, v, cli.json),
        Command::Audit(cmd) => audit::run(cmd, v, cli.json),
        Command::Type(cmd) => schema::run(cmd, v, cli.json),
        Command::Dlp(cmd) => dlp::run(cmd),
        Command::Run(a) => process::run(v, a),
        Command::Inject(a) => process::inject(v, a),
        Command::Mask(a) => process::mask(v, a),
        Command::Serve(a) => gateway::serve(v, a),
        Command::Apikey(cmd) => gateway::apikey(v, cmd),
        Command::Session(cmd) => session::run(v, cmd),
        Command::Lease(a) => session::lease(v, a),
        Command::Tfa(cmd) => tfa::run(v, cmd),
    };
    match result {
        Ok(Output::Exit(code)) => ExitCode::from(code),
        Ok(out) => {
            // Whichever form is printed, both are wiped: a command's output may hold a
            // value (a code, a URI with its key, a decrypted token).
            let (rendered, code): (zeroize::Zeroizing<Vec<u8>>, u8) = match out {
                Output::Text { text, json } => (render(cli.json, text, json), 0),
                Output::Report { text, json, code } => (render(cli.json, text, json), code),
                Output::Bytes(b) => (b, 0),
                Output::Exit(code) => (zeroize::Zeroizing::new(Vec::new()), code),
            };
            let mut stdout = std::io::stdout().lock();
            if stdout
                .write_all(&rendered)
                .and_then(|()| stdout.flush())
                .is_err()
            {
                return ExitCode::from(74); // EX_IOERR: stdout closed
            }
            ExitCode::from(code)
        }
        Err(f) => {
            // One line per message, whatever the message contained.
            let mut stderr = std::io::stderr().lock();
            for m in std::iter::once(&f.message).chain(&f.more) {
                let line = m.replace(['\n', '\r'], " ");
                let _ = writeln!(stderr, "credvault: {line}");
            }
            ExitCode::from(f.code)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::json;

    #[test]
    fn json_line_is_one_exactly_sized_line_and_wipe_json_clears_every_string() {
        let mut v =
            json!({"name": "bot", "value": "s3cr3t\u{1b}[31m", "n": [1, "x"], "o": {"k": "v"}});
        let line = super::json_line(&v);
        let mut want = serde_json::to_string(&v).unwrap().into_bytes();
        want.push(b'\n');
        assert_eq!(*line, want);
        // No growth: the buffer was allocated once, at its final size.
        assert_eq!(line.capacity(), line.len());
        super::wipe_json(&mut v);
        let mut strings = Vec::new();
        fn collect<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
            match v {
                serde_json::Value::String(s) => out.push(s),
                serde_json::Value::Array(a) => a.iter().for_each(|x| collect(x, out)),
                serde_json::Value::Object(o) => o.values().for_each(|x| collect(x, out)),
                _ => {}
            }
        }
        collect(&v, &mut strings);
        assert_eq!(strings.len(), 4);
        assert!(strings.iter().all(|s| s.is_empty()), "{strings:?}");
    }
}
