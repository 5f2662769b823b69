//! `credvault run`, `credvault inject` and `credvault mask`: secrets reach a process or a file
//! by reference (`cv://[TENANT/]NAME/FIELD[?env=ENV]`, `keychain://SERVICE/ACCOUNT`), and are
//! masked out of what comes back.
//!
//! - `run` resolves every environment variable (of its own environment and of `--env-file`s)
//!   whose value is a reference, or holds `{{ reference }}`s, starts the command with the
//!   values in its environment only, masks every resolved value (in every encoded form the DLP
//!   crate knows) in its stdout and stderr as they stream, forwards signals sent to `run`, and
//!   exits with the command's status (128 + N when a signal N ended it).
//! - `inject` renders a template into stdout or a new owner-only file.
//! - `mask` is a filter for pipelines that cannot use `run`.
//!
//! All vault references of one command are revealed in one audited batch per tenant (event
//! `accessed`, service = the command's name), and the vault is closed before the command
//! starts, so the command may itself use the vault.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::Args;
use credvault_dlp::{
    render_uris, template_uris, Masker, MaskerBuilder, MaskingWriter, SecretUri, UriResolver,
    MAX_TEMPLATE_LEN,
};
use credvault_store::{CredentialId, MASTER_KEY_ENV};
use zeroize::Zeroizing;

use crate::vault::{self, Target, VaultArgs};
use crate::{Failure, Output};

/// Largest `--env-file` read.
const MAX_ENV_FILE: u64 = 1 << 20;
/// Bytes read from a child's stream at a time (a pipe's default capacity; 1 MiB reads and
/// pipes measured no faster, docs/PERFORMANCE.md).
const CHUNK: usize = 1 << 16;
/// Signals sent to `run` (by `kill`, a supervisor, `docker stop`) that it passes on.
const FORWARDED: [i32; 6] = [
    signal_hook::consts::SIGHUP,
    signal_hook::consts::SIGINT,
    signal_hook::consts::SIGQUIT,
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGUSR1,
    signal_hook::consts::SIGUSR2,
];

/// Where references without a tenant or `?env=` point.
#[derive(Debug, Clone, Args)]
pub(crate) struct Sources {
    /// Read variables from a `.env` file too (repeatable; later files win, and files win over
    /// the environment).
    #[arg(long = "env-file", value_name = "FILE")]
    env_files: Vec<PathBuf>,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    sources: Sources,
    /// Do not mask the command's output (its stdout and stderr are then passed through as
    /// they are, a terminal included).
    #[arg(long)]
    no_masking: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub(crate) struct InjectArgs {
    /// The template (`-`: stdin, the default).
    #[arg(
        short = 'i',
        long = "in-file",
        value_name = "FILE",
        default_value = "-"
    )]
    input: String,
    /// Write to this file (created owner-only, or replaced atomically) instead of stdout.
    #[arg(short = 'o', long = "out-file", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Write the file even inside a git work tree where it is not ignored.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
pub(crate) struct MaskArgs {
    /// Mask the values of the references in the environment (as `run` resolves them).
    #[arg(long)]
    from_env: bool,
    /// Mask the value of this reference (repeatable).
    #[arg(long = "ref", value_name = "URI")]
    refs: Vec<String>,
    #[command(flatten)]
    sources: Sources,
}

/// One environment variable: a plain value, a whole-value reference, or a template with the
/// references found in it.
enum EnvValue {
    Plain(OsString),
    Uri(SecretUri),
    Template(String, Vec<SecretUri>),
}

/// The environment `run` starts from: its own, then each `--env-file` in order.
fn environment(files: &[PathBuf]) -> Result<Vec<(OsString, OsString)>, Failure> {
    let mut env: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    env.extend(file_env(files)?);
    Ok(env.into_iter().collect())
}

/// The variables of the `--env-file`s, in order (later ones win).
fn file_env(files: &[PathBuf]) -> Result<Vec<(OsString, OsString)>, Failure> {
    let mut env = Vec::new();
    for file in files {
        let shown = file.display();
        let len = std::fs::metadata(file)
            .map_err(|e| Failure::new(format!("{shown}: {e}")))?
            .len();
        if len > MAX_ENV_FILE {
            return Err(Failure::new(format!("{shown}: larger than 1 MiB")));
        }
        let iter = dotenvy::from_path_iter(file).map_err(|e| env_file_error(file, &e))?;
        for item in iter {
            let (k, v) = item.map_err(|e| env_file_error(file, &e))?;
            env.push((k.into(), v.into()));
        }
    }
    Ok(env)
}

fn env_file_error(file: &Path, e: &dotenvy::Error) -> Failure {
    // dotenvy's parse errors quote the offending line, which may hold a secret: say where only.
    let reason = match e {
        dotenvy::Error::LineParse(line, at) => {
            let n = std::fs::read_to_string(file)
                .ok()
                .and_then(|t| t.lines().position(|l| l.trim_end() == line.trim_end()));
            match n {
                Some(n) => format!(
                    "line {}: cannot be parsed at column {} (quote values with spaces)",
                    n + 1,
                    at + 1
                ),
                None => format!("cannot be parsed near byte {at}"),
            }
        }
        dotenvy::Error::Io(io) => io.to_string(),
        _ => "cannot be read".into(),
    };
    Failure::new(format!("{}: {reason}", file.display()))
}

/// Sorts each variable into plain, reference or template; a value that starts like a reference
/// but is not one is an error naming the variable.
fn classify(env: Vec<(OsString, OsString)>) -> Result<Vec<(OsString, EnvValue)>, Failure> {
    env.into_iter()
        .map(|(k, v)| {
            let Some(text) = v.to_str() else {
                return Ok((k, EnvValue::Plain(v)));
            };
            let name = k.to_string_lossy();
            let trimmed = text.trim();
            let value = if SecretUri::looks_like(trimmed) {
                EnvValue::Uri(
                    SecretUri::parse(trimmed)
                        .map_err(|e| Failure::usage(format!("${name}: {e}")))?,
                )
            } else if text.contains("{{") {
                let found =
                    template_uris(text).map_err(|e| Failure::usage(format!("${name}: {e}")))?;
                if found.is_empty() {
                    EnvValue::Plain(v)
                } else {
                    EnvValue::Template(text.to_owned(), found.into_iter().map(|(_, u)| u).collect())
                }
            } else {
                EnvValue::Plain(v)
            };
            Ok((k, value))
        })
        .collect()
}

fn uris_of(env: &[(OsString, EnvValue)]) -> BTreeSet<SecretUri> {
    let mut set = BTreeSet::new();
    for (_, v) in env {
        match v {
            EnvValue::Plain(_) => {}
            EnvValue::Uri(u) => {
                set.insert(u.clone());
            }
            EnvValue::Template(_, uris) => set.extend(uris.iter().cloned()),
        }
    }
    set
}

/// Resolved values, by reference. Wiped on drop.
struct Values(BTreeMap<SecretUri, Zeroizing<String>>);

impl UriResolver for Values {
    fn resolve(&self, uri: &SecretUri) -> Result<Zeroizing<String>, String> {
        self.0
            .get(uri)
            .cloned()
            .ok_or_else(|| "not resolved".to_owned())
    }
}

impl Values {
    /// A masker for every non-empty value, named by its reference's label.
    fn masker(&self) -> Result<Masker, Failure> {
        let mut b = MaskerBuilder::new();
        for (uri, value) in &self.0 {
            if !value.is_empty() {
                b.add_forced(&uri.label(), value)
                    .map_err(|e| Failure::new(format!("{}: cannot be masked: {e}", uri.label())))?;
            }
        }
        b.build().map_err(Failure::new)
    }
}

/// Resolves every reference: vault references through the store, revealed in one audited
/// batch per tenant with `service`, then the vault is closed; keychain references through the
/// OS keychain.
fn resolve(
    args: &VaultArgs,
    defaults: &Target,
    uris: &BTreeSet<SecretUri>,
    service: &str,
) -> Result<Values, Failure> {
    let mut out = BTreeMap::new();
    let mut by_tenant: BTreeMap<String, Vec<(&SecretUri, &credvault_dlp::VaultRef)>> =
        BTreeMap::new();
    for uri in uris {
        match uri {
            SecretUri::Vault(r) => by_tenant
                .entry(r.tenant.clone().unwrap_or_else(|| defaults.tenant.clone()))
                .or_default()
                .push((uri, r)),
            SecretUri::Keychain(k) => {
                let value = crate::keychain::get(&k.service, &k.account)
                    .map_err(|e| Failure::new(format!("{}: {e}", uri.label())))?;
                out.insert(uri.clone(), value);
            }
            _ => return Err(Failure::usage(format!("{}: unsupported", uri.label()))),
        }
    }
    if !by_tenant.is_empty() {
        vault::with_vault(args, |v| {
            for (tenant, refs) in &by_tenant {
                let scope = v
                    .store()
                    .tenant(&vault::tenant_id(tenant)?, args.actor())
                    .map_err(vault::fail)?;
                // One request per credential, with every field asked of it.
                let mut index: BTreeMap<(&str, &str), usize> = BTreeMap::new();
                let mut requests: Vec<(CredentialId, Vec<String>)> = Vec::new();
                let mut slots = Vec::with_capacity(refs.len());
                for (uri, r) in refs {
                    let env = r.environment.as_deref().unwrap_or(&defaults.environment);
                    let i = match index.get(&(r.name.as_str(), env)) {
                        Some(i) => *i,
                        None => {
                            let info = scope
                                .find(&r.name, env)
                                .map_err(|e| Failure::new(format!("{}: {e}", uri.label())))?;
                            let id = info.id.clone();
                            requests.push((id, Vec::new()));
                            index.insert((r.name.as_str(), env), requests.len() - 1);
                            requests.len() - 1
                        }
                    };
                    if !requests[i].1.contains(&r.field) {
                        requests[i].1.push(r.field.clone());
                    }
                    slots.push((*uri, i, r.field.as_str()));
                }
                let revealed = scope
                    .reveal_many(&requests, Some(service))
                    .map_err(|e| Failure::new(format!("resolving references: {e}")))?;
                for (uri, i, field) in slots {
                    let value = revealed[i].expose_secret(field).unwrap_or_default();
                    out.insert(uri.clone(), Zeroizing::new(value.to_owned()));
                }
            }
            Ok(())
        })?;
    }
    Ok(Values(out))
}

/// The command's name as recorded in the audit log (its file name, at most 64 bytes).
fn service_name(command: &OsStr) -> String {
    let name = Path::new(command)
        .file_name()
        .unwrap_or(command)
        .to_string_lossy();
    let mut s: String = name.chars().filter(|c| !c.is_control()).collect();
    while s.len() > 64 {
        s.pop();
    }
    s
}

/// Whether the command can be found, checked before any secret is revealed for it.
fn findable(command: &OsStr, env: &[(OsString, EnvValue)]) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if command.as_bytes().contains(&b'/') {
        return runnable(Path::new(command));
    }
    let path = env.iter().find_map(|(k, v)| match v {
        EnvValue::Plain(p) if k == "PATH" => Some(p.clone()),
        _ => None,
    });
    path.is_some_and(|p| std::env::split_paths(&p).any(|d| runnable(&d.join(command))))
}

pub(crate) fn run(args: &VaultArgs, r: RunArgs) -> Result<Output, Failure> {
    let env = classify(environment(&r.sources.env_files)?)?;
    if !findable(&r.command[0], &env) {
        return Err(Failure {
            code: 127,
            ..Failure::new(format!(
                "{}: command not found (nothing was revealed)",
                r.command[0].to_string_lossy()
            ))
        });
    }
    let service = service_name(&r.command[0]);
    let values = resolve(args, &r.sources.target, &uris_of(&env), &service)?;
    let mut child_env: Vec<(OsString, Zeroizing<Vec<u8>>)> = Vec::with_capacity(env.len());
    for (k, v) in env {
        // The vault's own master key never reaches the command.
        if k == MASTER_KEY_ENV {
            continue;
        }
        let value = match v {
            EnvValue::Plain(p) => p.into_vec(),
            EnvValue::Uri(u) => values
                .0
                .get(&u)
                .map_or_else(Vec::new, |s| s.as_bytes().to_vec()),
            EnvValue::Template(t, _) => {
                let rendered = render_uris(&t, &values).map_err(Failure::new)?;
                rendered.text.expose_secret().as_bytes().to_vec()
            }
        };
        child_env.push((k, Zeroizing::new(value)));
    }
    let masker = if r.no_masking {
        None
    } else {
        Some(values.masker()?)
    };
    drop(values);
    let code = spawn(&r.command, child_env, masker.as_ref())?;
    Ok(Output::Exit(code))
}

/// Starts the command, pumps its output through the masker, forwards signals, and returns the
/// exit code to pass on.
fn spawn(
    command: &[OsString],
    env: Vec<(OsString, Zeroizing<Vec<u8>>)>,
    masker: Option<&Masker>,
) -> Result<u8, Failure> {
    use signal_hook::iterator::exfiltrator::WithOrigin;
    use signal_hook::iterator::SignalsInfo;

    // Registered before the command starts, so no signal falls between.
    let mut signals = SignalsInfo::<WithOrigin>::new(FORWARDED)
        .map_err(|e| Failure::new(format!("cannot handle signals: {e}")))?;
    let handle = signals.handle();
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]).env_clear();
    // std keeps its own copy of the environment until `cmd` is dropped, just after the spawn.
    for (k, v) in &env {
        cmd.env(k, OsStr::from_bytes(v));
    }
    if masker.is_some() {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let shown = command[0].to_string_lossy();
    let spawned = cmd.spawn();
    drop(cmd);
    drop(env);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            handle.close();
            let code = if e.kind() == io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            return Err(Failure {
                code,
                ..Failure::new(format!("{shown}: {e}"))
            });
        }
    };
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let status = std::thread::scope(|s| {
        let pumps: Vec<_> = match masker {
            Some(m) => [
                stdout.map(|o| {
                    (
                        Box::new(o) as Box<dyn Read + Send>,
                        io::stdout().as_fd().try_clone_to_owned(),
                    )
                }),
                stderr.map(|e| {
                    (
                        Box::new(e) as Box<dyn Read + Send>,
                        io::stderr().as_fd().try_clone_to_owned(),
                    )
                }),
            ]
            .into_iter()
            .flatten()
            .map(|(r, w)| {
                s.spawn(move || match w {
                    Ok(w) => pump(r, std::fs::File::from(w), m),
                    Err(e) => Err(PumpError::Write(e)),
                })
            })
            .collect(),
            None => Vec::new(),
        };
        s.spawn(move || {
            for info in signals.forever() {
                // A signal from the terminal (Ctrl-C) reached the command's process group
                // already; one sent to `run` alone is passed on.
                if matches!(info.cause, signal_hook::low_level::siginfo::Cause::Kernel) {
                    continue;
                }
                if let (Some(pid), Some(sig)) =
                    (pid, rustix::process::Signal::from_named_raw(info.signal))
                {
                    let _ = rustix::process::kill_process(pid, sig);
                }
            }
        });
        let status = child.wait();
        handle.close();
        for p in pumps {
            // A closed stdout (the reader went away) is not the command's failure.
            let _ = p.join();
        }
        status
    })
    .map_err(|e| Failure::new(format!("waiting for {shown}: {e}")))?;
    Ok(exit_code(status))
}

pub(crate) fn exit_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => u8::try_from(c & 0xff).unwrap_or(1),
        (None, Some(sig)) => u8::try_from(128 + (sig & 0x7f)).unwrap_or(255),
        (None, None) => 1,
    }
}

/// Where a [`pump`] failed: reading its input or writing its output.
#[derive(Debug)]
pub(crate) enum PumpError {
    Read(io::Error),
    Write(io::Error),
}

impl PumpError {
    /// The failure as `cannot read <from>: ...` or `cannot write <to>: ...`.
    pub(crate) fn failure(self, from: &str, to: &str) -> Failure {
        match self {
            Self::Read(e) => Failure::new(format!("cannot read {from}: {e}")),
            Self::Write(e) => Failure::new(format!("cannot write {to}: {e}")),
        }
    }
}

/// Copies `r` to `w` through a [`MaskingWriter`], writing each decided piece at once. The read
/// buffer is cleared after each chunk and wiped when dropped.
pub(crate) fn pump(mut r: impl Read, w: impl Write, masker: &Masker) -> Result<(), PumpError> {
    let mut buf = Zeroizing::new(vec![0u8; CHUNK]);
    let mut w = MaskingWriter::new(masker, w);
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(PumpError::Read(e)),
        };
        let written = w.write_all(&buf[..n]);
        // Plain stores are enough while the buffer lives (the next read reuses it); the
        // `Zeroizing` wrapper wipes it with volatile stores when it is dropped.
        buf[..n].fill(0);
        written.map_err(PumpError::Write)?;
    }
    w.finish().map(drop).map_err(PumpError::Write)
}

pub(crate) fn inject(args: &VaultArgs, a: InjectArgs) -> Result<Output, Failure> {
    let template = read_template(&a.input)?;
    if let Some(path) = &a.output {
        if !a.force {
            git_guard(path)?;
        }
    }
    let uris: BTreeSet<SecretUri> = template_uris(&template)
        .map_err(|e| Failure::usage(format!("{}: {e}", a.input)))?
        .into_iter()
        .map(|(_, u)| u)
        .collect();
    let values = resolve(args, &a.target, &uris, "inject")?;
    let rendered = render_uris(&template, &values).map_err(Failure::new)?;
    let bytes = rendered.text.expose_secret().as_bytes();
    match &a.output {
        None => Ok(Output::Bytes(Zeroizing::new(bytes.to_vec()))),
        Some(path) => {
            write_private(path, bytes)?;
            Ok(Output::Exit(0))
        }
    }
}

fn read_template(input: &str) -> Result<Zeroizing<String>, Failure> {
    let limit = MAX_TEMPLATE_LEN as u64 + 1;
    let mut text = Zeroizing::new(String::new());
    let read = if input == "-" {
        io::stdin().take(limit).read_to_string(&mut text)
    } else {
        std::fs::File::open(input).and_then(|f| f.take(limit).read_to_string(&mut text))
    };
    read.map_err(|e| Failure::new(format!("{input}: {e}")))?;
    if text.len() > MAX_TEMPLATE_LEN {
        return Err(Failure::new(format!("{input}: larger than 1 MiB")));
    }
    Ok(text)
}

/// Refuses a path inside a git work tree that git does not ignore: a rendered file holds
/// secrets and must never be committed (tracked files are never ignored).
fn git_guard(path: &Path) -> Result<(), Failure> {
    let abs =
        std::path::absolute(path).map_err(|e| Failure::new(format!("{}: {e}", path.display())))?;
    let (Some(dir), Some(name)) = (abs.parent(), abs.file_name()) else {
        return Err(Failure::usage(format!(
            "{}: not a file path",
            path.display()
        )));
    };
    if !dir.ancestors().any(|a| a.join(".git").exists()) {
        return Ok(());
    }
    let refuse = |why: &str| {
        Failure::new(format!(
            "{} is inside a git work tree and {why}; add it to .gitignore, or pass --force",
            path.display()
        ))
    };
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["check-ignore", "-q", "--"])
        .arg(name)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match status.map(|s| s.code()) {
        Ok(Some(0)) => Ok(()),
        Ok(Some(1)) => Err(refuse("not ignored (tracked, or committable)")),
        _ => Err(refuse("git could not tell whether it is ignored")),
    }
}

/// Writes `bytes` to a new owner-only file, or replaces an existing one atomically with one
/// (a temporary file created owner-only beside it, synced, renamed over it).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    let shown = path.display();
    let io_fail = |e: io::Error| Failure::new(format!("{shown}: {e}"));
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            if let Err(e) = f.write_all(bytes).and_then(|()| f.sync_all()) {
                drop(f);
                let _ = std::fs::remove_file(path);
                return Err(io_fail(e));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let mut tmp = tempfile::Builder::new()
                .prefix(".credvault-inject-")
                .tempfile_in(&dir)
                .map_err(io_fail)?;
            tmp.write_all(bytes)
                .and_then(|()| tmp.as_file().sync_all())
                .map_err(io_fail)?;
            tmp.persist(path).map_err(|e| io_fail(e.error))?;
        }
        Err(e) => return Err(io_fail(e)),
    }
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io_fail)
}

pub(crate) fn mask(args: &VaultArgs, m: MaskArgs) -> Result<Output, Failure> {
    if !m.from_env && m.refs.is_empty() && m.sources.env_files.is_empty() {
        return Err(Failure::usage(
            "name what to mask: --ref URI, --from-env or --env-file FILE",
        ));
    }
    let mut uris = BTreeSet::new();
    for r in &m.refs {
        uris.insert(SecretUri::parse(r).map_err(|e| Failure::usage(format!("--ref: {e}")))?);
    }
    let env = if m.from_env {
        environment(&m.sources.env_files)?
    } else {
        file_env(&m.sources.env_files)?
    };
    uris.extend(uris_of(&classify(env)?));
    let values = resolve(args, &m.sources.target, &uris, "mask")?;
    let masker = values.masker()?;
    drop(values);
    let out = io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .map_err(|e| Failure::new(format!("stdout: {e}")))?;
    match pump(io::stdin().lock(), out, &masker) {
        Ok(()) => Ok(Output::Exit(0)),
        // The reader went away (`mask | head`): not a failure of the filter.
        Err(PumpError::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(Output::Exit(0)),
        Err(e) => Err(e.failure("stdin", "stdout")),
    }
}
