//! Helpers shared by the CLI test files (each mounts this module and uses some of them).
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

/// The arguments with every literal key after one of `flags` written to an owner-only file
/// and passed as `@FILE` (the CLI never takes a key on argv); `@...` and `-` pass as they are.
pub(crate) fn keys_to_files(
    flags: &[&str],
    args: &[&str],
) -> (Vec<String>, Vec<tempfile::NamedTempFile>) {
    let mut out = Vec::new();
    let mut files = Vec::new();
    let mut next_is_key = false;
    for a in args {
        if next_is_key && !a.starts_with('@') && *a != "-" {
            let mut f = tempfile::NamedTempFile::new().unwrap();
            std::io::Write::write_all(&mut f, a.as_bytes()).unwrap();
            out.push(format!("@{}", f.path().display()));
            files.push(f);
        } else {
            out.push((*a).to_owned());
        }
        next_is_key = flags.contains(a);
    }
    (out, files)
}

/// The value of a variable naming a real server `.ci/run` starts, or `None` on a developer
/// machine without it. Panics when `CI` is set: CI must not pass by skipping.
pub(crate) fn service(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{var} is not set but CI is: .ci/run starts the server and sets it")
        }
        _ => None,
    }
}

/// Where `credvault init` puts the key file of the vault in `dir` in tests: beside it, in the
/// test's temporary directory (never the developer's `~/.config`).
pub(crate) fn config_dir(dir: &std::path::Path) -> std::path::PathBuf {
    let mut s = dir.as_os_str().to_owned();
    s.push(".config");
    std::path::PathBuf::from(s)
}

/// `credvault` on the vault in `dir`, as actor `tester`, with none of the caller's settings
/// that would point it elsewhere (master key, tenant, database, AWS endpoints).
pub(crate) fn credvault_in(dir: &std::path::Path) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("credvault").unwrap();
    c.env("CREDVAULT_DIR", dir)
        .env("CREDVAULT_CONFIG_DIR", config_dir(dir))
        .env_remove("CREDVAULT_MASTER_KEY")
        .env_remove("CREDVAULT_TENANT")
        .env_remove("CREDVAULT_DATABASE_URL")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINT_URL_STS")
        .env("CREDVAULT_ACTOR", "tester");
    c
}

/// [`credvault_in`] as a plain `std::process::Command`, for a process the test starts and
/// leaves running (a lease holder, a server), with the same settings; stdin closed.
pub(crate) fn process_in(dir: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("credvault"));
    c.env("CREDVAULT_DIR", dir)
        .env("CREDVAULT_CONFIG_DIR", config_dir(dir))
        .env_remove("CREDVAULT_MASTER_KEY")
        .env_remove("CREDVAULT_TENANT")
        .env_remove("CREDVAULT_DATABASE_URL")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINT_URL_STS")
        .env("CREDVAULT_ACTOR", "tester")
        .stdin(std::process::Stdio::null());
    c
}

/// `credvault` on the vault in `dir` with `args` and `stdin`: its output, whatever the status.
pub(crate) fn run_in(dir: &std::path::Path, args: &[&str], stdin: &str) -> std::process::Output {
    credvault_in(dir)
        .args(args)
        .write_stdin(stdin)
        .output()
        .unwrap()
}

/// [`run_in`] that must succeed: its stdout.
pub(crate) fn ok_in(dir: &std::path::Path, args: &[&str], stdin: &str) -> String {
    let out = run_in(dir, args, stdin);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Adds the website login `portal` to the vault in `dir`, its password read from stdin.
pub(crate) fn add_portal(dir: &std::path::Path, password: &str) {
    ok_in(
        dir,
        &[
            "add",
            "website_login",
            "portal",
            "--field",
            "login_url=https://x.example/login",
            "--field",
            "username=bot",
        ],
        password,
    );
}

/// Copies the files of vault directory `from` (settings, keys; not subdirectories) to `to`: a
/// second node of a vault kept in PostgreSQL.
pub(crate) fn copy_node(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}
