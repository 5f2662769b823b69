//! End-to-end tests of the vault commands: init, tenant, add, list, show, reveal, update, rm,
//! totp NAME, test, rotate, type add, audit verify and show on the vault's own log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use assert_cmd::Command;

struct V {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl V {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault");
        let v = Self { _dir: dir, path };
        let out = v.cmd().arg("init").output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        v
    }

    /// The master key file `credvault init` made (named in `master.uri`).
    fn key_file(&self) -> PathBuf {
        let uri = std::fs::read_to_string(self.path.join("master.uri")).unwrap();
        PathBuf::from(uri.trim_end().strip_prefix("file:").unwrap())
    }

    fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("credvault").unwrap();
        c.env("CREDVAULT_DIR", &self.path)
            .env("CREDVAULT_CONFIG_DIR", self.path.with_extension("config"))
            .env_remove("CREDVAULT_MASTER_KEY")
            .env_remove("CREDVAULT_TENANT")
            .env("CREDVAULT_ACTOR", "tester");
        c
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str], stdin: &str) -> String {
        let out = self.cmd().args(args).write_stdin(stdin).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and expects failure: one stderr line, empty stdout; returns stderr.
    fn fails(&self, args: &[&str], stdin: &str) -> String {
        let out = self.cmd().args(args).write_stdin(stdin).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            out.stdout.is_empty(),
            "{args:?}: stdout {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.starts_with("credvault: "), "{err}");
        err
    }
}

const TOTP: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

fn add_login(v: &V, name: &str, password: &str) -> String {
    v.ok(
        &[
            "add",
            "website_login",
            name,
            "--field",
            "login_url=https://x.example/login",
            "--field",
            "username=bot",
            "--tag",
            "ci",
        ],
        password,
    )
}

#[test]
fn init_creates_private_files_and_refuses_twice() {
    let v = V::new();
    // The master key file is not beside the database: a copy of the vault directory carries
    // no key. `master.uri` names it, in an owner-only directory of the config dir.
    assert!(!v.path.join("master.key").exists());
    let key = v.key_file();
    assert!(
        key.starts_with(v.path.with_extension("config")),
        "{}",
        key.display()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(key.parent().unwrap()), 0o700);
        assert_eq!(mode(&v.path.join("master.uri")) & 0o022, 0);
    }
    let out = v.ok(&["doctor"], "");
    assert!(out.contains(&format!("file:{}", key.display())), "{out}");
    for f in ["vault.db", "audit.key"] {
        let meta = std::fs::metadata(v.path.join(f)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                meta.permissions().mode() & 0o077,
                0,
                "{f} is not owner-only"
            );
        }
        let _ = meta;
    }
    let err = v.fails(&["init"], "");
    assert!(err.contains("already holds a vault"), "{err}");
    // A key file others can read is refused.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let k = v.path.join("audit.key");
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = v.fails(&["list"], "");
        assert!(err.contains("readable by group or others"), "{err}");
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // No vault: a clear error.
    let mut c = Command::cargo_bin("credvault").unwrap();
    let out = c
        .args(["--vault", "/nonexistent/credvault-vault", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("holds no vault"));
}

#[test]
fn add_reads_secrets_from_stdin_and_files_never_argv() {
    let v = V::new();
    let out = add_login(&v, "github", "s3cr3t-from-stdin\n");
    assert!(
        out.contains("created github") && out.contains("password: ********"),
        "{out}"
    );
    assert!(!out.contains("s3cr3t"));
    // A secret field's value on argv is refused, naming the ways that keep it off argv, and
    // never echoed; nothing is stored.
    let err = v.fails(
        &[
            "add",
            "website_login",
            "leaky",
            "--field",
            "login_url=https://l.example/",
            "--field",
            "username=u",
            "--field",
            "password=hunter2-on-argv",
        ],
        "",
    );
    assert!(
        err.contains("password=-") && err.contains("password=@FILE") && err.contains("prompted"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    v.fails(&["show", "leaky"], "");
    let err = v.fails(&["update", "github", "--field", "password=new-on-argv"], "");
    assert!(
        err.contains("password=-") && !err.contains("new-on-argv"),
        "{err}"
    );
    assert_eq!(
        v.ok(&["reveal", "github", "--field", "password"], ""),
        "s3cr3t-from-stdin\n"
    );
    // @FILE for a field; several missing secrets as a JSON object on stdin.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("totp");
    std::fs::write(&f, format!("{TOTP}\n")).unwrap();
    let at = format!("totp_secret=@{}", f.display());
    v.ok(
        &[
            "add",
            "website_login",
            "gitlab",
            "--field",
            "login_url=https://g.example/",
            "--field",
            "username=u",
            "--field",
            &at,
        ],
        "pw-gitlab",
    );
    // The authenticator key went in; it never comes out (write-only), only its codes do.
    let err = v.fails(&["reveal", "gitlab", "--field", "totp_secret"], "");
    assert!(err.contains("write-only") && !err.contains(TOTP), "{err}");
    assert_eq!(v.ok(&["totp", "gitlab"], "").trim().len(), 6);
    v.ok(
        &[
            "add",
            "postgres",
            "db",
            "--field",
            "host=db.example.com",
            "--field",
            "database=app",
            "--field",
            "user=app",
        ],
        r#"{"password": "pg-pass"}"#,
    );
    assert_eq!(
        v.ok(&["reveal", "db", "--field", "password"], ""),
        "pg-pass\n"
    );
    // --from-json.
    let j = dir.path().join("c.json");
    std::fs::write(&j, r#"{"token": "abcdefgh12345678"}"#).unwrap();
    v.ok(
        &[
            "add",
            "http_bearer_token",
            "api",
            "--from-json",
            j.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(
        v.ok(&["reveal", "api", "--field", "token"], ""),
        "abcdefgh12345678\n"
    );
    // Validation errors: every error, one per line, no value.
    let out = v
        .cmd()
        .args([
            "add",
            "website_login",
            "bad",
            "--field",
            "login_url=not-a-url-SECRETX",
            "--field",
            "username=u",
        ])
        .write_stdin("pw")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("login_url"), "{err}");
    assert!(!err.contains("SECRETX"), "{err}");
    // Unknown type; duplicate name.
    assert!(v
        .fails(&["add", "nope", "x"], "")
        .contains("unknown credential type"));
    assert!(v
        .fails(
            &[
                "add",
                "http_bearer_token",
                "api",
                "--from-json",
                j.to_str().unwrap()
            ],
            ""
        )
        .contains("already exists"));
}

#[test]
fn list_show_json_and_filters() {
    let v = V::new();
    add_login(&v, "a", "pw-a");
    add_login(&v, "b", "pw-b");
    v.ok(
        &[
            "add",
            "http_bearer_token",
            "t",
            "--env",
            "staging",
            "--field",
            "token=-",
        ],
        "tok123456789",
    );
    let list = v.ok(&["list"], "");
    assert_eq!(list.lines().count(), 3, "{list}");
    assert!(!list.contains("pw-"));
    let staging = v.ok(&["list", "--env", "staging"], "");
    assert!(staging.starts_with("t\tstaging"), "{staging}");
    assert_eq!(
        v.ok(&["list", "--type", "website_login"], "")
            .lines()
            .count(),
        2
    );
    let json: serde_json::Value = serde_json::from_str(&v.ok(&["--json", "list"], "")).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3);
    let show: serde_json::Value =
        serde_json::from_str(&v.ok(&["--json", "show", "a"], "")).unwrap();
    assert_eq!(show["fields"]["password"], "__credvault_secret__");
    assert_eq!(show["fields"]["username"], "bot");
    assert_eq!(show["version"], 1);
    let text = v.ok(&["show", "t", "--env", "staging"], "");
    assert!(
        text.contains("token: ********") && !text.contains("tok123"),
        "{text}"
    );
    assert!(v.fails(&["show", "t"], "").contains("no credential"));
}

#[test]
fn reveal_prints_exactly_the_value_and_denials_print_nothing() {
    let v = V::new();
    add_login(&v, "site", "pw with spaces");
    assert_eq!(
        v.ok(
            &["reveal", "site", "--field", "password", "--service", "bot"],
            ""
        ),
        "pw with spaces\n"
    );
    assert_eq!(
        v.ok(&["reveal", "site", "--field", "username"], ""),
        "bot\n"
    );
    let j: serde_json::Value =
        serde_json::from_str(&v.ok(&["--json", "reveal", "site", "--field", "password"], ""))
            .unwrap();
    assert_eq!(j["value"], "pw with spaces");
    v.fails(&["reveal", "site", "--field", "nope"], "");
    v.fails(&["reveal", "missing", "--field", "password"], "");
    v.fails(&["reveal", "site"], ""); // --field is required
    v.ok(&["tenant", "add", "other"], "");
    assert!(v
        .fails(
            &["reveal", "site", "--field", "password", "--tenant", "other"],
            ""
        )
        .contains("no credential"));
    assert!(v
        .fails(
            &["reveal", "site", "--field", "password", "--tenant", "ghost"],
            ""
        )
        .contains("unknown tenant"));
    v.ok(&["update", "site", "--active", "false"], "");
    let err = v.fails(&["reveal", "site", "--field", "password"], "");
    assert!(
        err.contains("inactive") && err.lines().count() == 1,
        "{err}"
    );
    v.ok(
        &[
            "update",
            "site",
            "--active",
            "true",
            "--expires",
            "2001-01-01T00:00:00Z",
        ],
        "",
    );
    assert!(v
        .fails(&["reveal", "site", "--field", "password"], "")
        .contains("expired"));
    // Every access and denial is in the vault's audit log.
    let log = v.ok(&["audit", "show"], "");
    assert!(
        log.contains("accessed") && log.contains("access_denied"),
        "{log}"
    );
    assert!(!log.contains("pw with spaces"));
}

#[test]
fn update_rm_and_versions() {
    let v = V::new();
    add_login(&v, "s", "old-pw");
    let out = v.ok(
        &[
            "update",
            "s",
            "--field",
            "password=-",
            "--description",
            "rotated",
        ],
        "new-pw\n",
    );
    assert!(out.contains("version 2"), "{out}");
    assert_eq!(
        v.ok(&["reveal", "s", "--field", "password"], ""),
        "new-pw\n"
    );
    assert!(v
        .fails(
            &["update", "s", "--description", "x", "--expect-version", "1"],
            ""
        )
        .contains("expected version 1"));
    v.ok(&["update", "s", "--rename", "s2"], "");
    v.fails(&["show", "s"], "");
    assert!(v
        .fails(&["rm", "s2", "--expect-version", "1"], "")
        .contains("version"));
    v.ok(&["rm", "s2"], "");
    assert_eq!(v.ok(&["list"], ""), "");
    let log = v.ok(&["audit", "show"], "");
    assert!(log.contains("updated") && log.contains("deleted"));
    assert!(!log.contains("new-pw") && !log.contains("old-pw"));
}

#[test]
fn totp_name_prints_a_code_and_subcommands_still_work() {
    let v = V::new();
    let seed = v.path.parent().unwrap().join("seed");
    std::fs::write(&seed, TOTP).unwrap();
    v.ok(
        &[
            "add",
            "website_login",
            "site",
            "--field",
            "login_url=https://x.example/",
            "--field",
            "username=u",
            "--field",
            &format!("totp_secret=@{}", seed.display()),
        ],
        "pw",
    );
    let code = v.ok(&["totp", "site", "--service", "browser"], "");
    assert!(
        code.len() == 7 && code[..6].bytes().all(|b| b.is_ascii_digit()),
        "{code:?}"
    );
    // Same code as the standalone subcommand computes from the same secret, at the same time
    // (retry once if a 30 s step boundary fell between the two runs).
    let mut matched = false;
    for _ in 0..2 {
        let a = v.ok(&["totp", "site"], "");
        let b = v.ok(&["totp", "code", "--secret", "@/dev/stdin"], TOTP);
        if a == b {
            matched = true;
            break;
        }
    }
    assert!(matched, "vault code differs from `totp code`");
    let j: serde_json::Value =
        serde_json::from_str(&v.ok(&["--json", "totp", "site"], "")).unwrap();
    assert!(j["valid_until"].as_u64().unwrap() > 0);
    add_login(&v, "nototp", "pw");
    assert!(v
        .fails(&["totp", "nototp"], "")
        .contains("authenticator key"));
    assert!(v.ok(&["audit", "show"], "").contains("totp_generated"));
}

fn serve(status: u16) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming().take(4) {
            let mut c = c.unwrap();
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = c.write_all(
                format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
                )
                .as_bytes(),
            );
        }
    });
    port
}

fn local_type(dir: &Path, port: u16) -> std::path::PathBuf {
    let p = dir.join("local.json");
    std::fs::write(
        &p,
        format!(
            r#"{{"name": "local_api", "display_name": "Local API", "category": "api",
                "fields": [{{"key": "token", "label": "Token", "kind": "password", "required": true}}],
                "authenticate": {{"headers": {{"Authorization": "Bearer {{{{token}}}}"}}}},
                "test": {{"kind": "http", "request": {{"url": "http://127.0.0.1:{port}/"}}}}}}"#
        ),
    )
    .unwrap();
    p
}

#[test]
fn type_add_and_test() {
    let v = V::new();
    let dir = tempfile::tempdir().unwrap();
    let ok_port = serve(200);
    let t = local_type(dir.path(), ok_port);
    assert!(v
        .ok(&["type", "add", t.to_str().unwrap()], "")
        .contains("registered credential type local_api"));
    assert!(v
        .fails(&["type", "add", t.to_str().unwrap()], "")
        .contains("exists already"));
    v.ok(&["add", "local_api", "svc"], "tok");
    // Public addresses only unless told: the local service is refused, nothing is sent.
    let out = v.cmd().args(["test", "svc"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains("error (refused: the host is a loopback address"));
    assert!(v
        .fails(&["test", "svc", "--allow-network", "lan"], "")
        .contains("unknown address class"));
    let out = v.ok(&["test", "svc", "--allow-network", "loopback"], "");
    assert!(out.starts_with("svc: ok"), "{out}");
    let show: serde_json::Value =
        serde_json::from_str(&v.ok(&["--json", "show", "svc"], "")).unwrap();
    assert_eq!(show["test_status"], "ok");
    assert!(v.ok(&["audit", "show"], "").contains("tested"));
    // A credential the service rejects: exit 1, the report on stdout.
    let v2 = V::new();
    let t2 = local_type(dir.path(), serve(401));
    v2.ok(&["type", "add", t2.to_str().unwrap()], "");
    v2.ok(&["add", "local_api", "svc"], "tok");
    let out = v2
        .cmd()
        .args(["test", "svc", "--allow-network=loopback"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains("failed (rejected by the service (HTTP 401))"));
    // A type without a test.
    add_login(&v, "site", "pw");
    assert!(v.fails(&["test", "site"], "").contains("has no test"));
}

#[test]
fn rotations_keep_every_credential_and_the_log_verifies() {
    let v = V::new();
    for i in 0..20 {
        add_login(&v, &format!("c{i}"), &format!("pw-{i}"));
    }
    v.ok(&["tenant", "add", "globex"], "");
    v.ok(
        &[
            "add",
            "http_bearer_token",
            "g",
            "--tenant",
            "globex",
            "--field",
            "token=-",
        ],
        "globex-token",
    );
    let before: serde_json::Value =
        serde_json::from_str(&v.ok(&["--json", "tenant", "list"], "")).unwrap();
    let out = v.ok(&["rotate", "tenant"], "");
    assert!(
        out.contains("20 credential(s) re-encrypted") && out.contains("0 failed"),
        "{out}"
    );
    let out = v.ok(&["rotate", "master"], "");
    assert!(
        out.contains("2 data key(s) re-wrapped") && out.contains("retired master version(s): 1"),
        "{out}"
    );
    let after: serde_json::Value =
        serde_json::from_str(&v.ok(&["--json", "tenant", "list"], "")).unwrap();
    assert_ne!(
        before[0]["active_key"], after[0]["active_key"],
        "default tenant key rotated"
    );
    assert_eq!(
        before[1]["active_key"], after[1]["active_key"],
        "globex key untouched"
    );
    assert_eq!(after[0]["master_key_version"], 2);
    for i in 0..20 {
        assert_eq!(
            v.ok(&["reveal", &format!("c{i}"), "--field", "password"], ""),
            format!("pw-{i}\n")
        );
    }
    assert_eq!(
        v.ok(
            &["reveal", "g", "--tenant", "globex", "--field", "token"],
            ""
        ),
        "globex-token\n"
    );
    let ver = v.ok(&["audit", "verify"], "");
    assert!(ver.starts_with("audit log intact"), "{ver}");
    let j: serde_json::Value =
        serde_json::from_str(&v.ok(&["--json", "audit", "verify"], "")).unwrap();
    assert_eq!(j["intact"], true);
    // The master key from the environment cannot be rotated here.
    let key = std::fs::read_to_string(v.key_file()).unwrap();
    let out = v
        .cmd()
        .env("CREDVAULT_MASTER_KEY", key)
        .args(["rotate", "master"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("rotate it where it is kept"));
}

#[test]
fn audit_verify_detects_a_log_cut_short_or_replaced() {
    let v = V::new();
    add_login(&v, "a", "pw");
    let audit = v.path.join("audit");
    let copy = tempfile::tempdir().unwrap();
    let old = copy.path().join("old");
    std::fs::create_dir(&old).unwrap();
    for e in std::fs::read_dir(&audit).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, old.join(p.file_name().unwrap())).unwrap();
    }
    add_login(&v, "b", "pw");
    v.ok(&["reveal", "b", "--field", "password"], "");
    assert!(v
        .ok(&["audit", "verify"], "")
        .starts_with("audit log intact"));
    // Replace the log (segments and anchor) with the older, internally consistent copy.
    for e in std::fs::read_dir(&old).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, audit.join(p.file_name().unwrap())).unwrap();
    }
    let err = v.fails(&["audit", "verify"], "");
    assert!(
        err.contains("NOT intact") && err.contains("recorded"),
        "{err}"
    );
    // And the vault refuses to open on it (nothing is appended to a log that lost records).
    let err = v.fails(&["list"], "");
    assert!(err.contains("cut short or replaced"), "{err}");
}

#[test]
fn add_prompts_for_missing_secrets_on_a_terminal() {
    // `script` gives the command a pseudo-terminal; skip where util-linux's `script` is absent.
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no `script` to provide a terminal");
        return;
    }
    let v = V::new();
    let bin = assert_cmd::cargo::cargo_bin("credvault");
    let out = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("{} add http_bearer_token tok", bin.display()),
            "/dev/null",
        ])
        .env("CREDVAULT_DIR", &v.path)
        .env("CREDVAULT_CONFIG_DIR", v.path.with_extension("config"))
        .env_remove("CREDVAULT_MASTER_KEY")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .unwrap()
                .write_all(b"typed-at-the-prompt\n")?;
            c.wait_with_output()
        })
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Token: "), "no prompt in {text:?}");
    assert!(text.contains("created tok"), "{text}");
    assert_eq!(
        v.ok(&["reveal", "tok", "--field", "token"], ""),
        "typed-at-the-prompt\n"
    );
}

#[test]
fn verify_agrees_on_an_untouched_vault_and_fails_on_an_older_database_copy() {
    let v = V::new();
    add_login(&v, "bank", "pw-1\n");
    let out = v.ok(&["verify", "--json"], "");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["ok"], true, "{j}");
    assert_eq!(j["store"]["credentials"], 1, "{j}");
    assert!(v
        .ok(&["verify"], "")
        .contains("vault verified: nothing found"));

    // Save the database, change the credential through the CLI, put the old copy back.
    let db = v.path.join("vault.db");
    let saved = v.path.join("old.db");
    std::fs::copy(&db, &saved).unwrap();
    v.ok(&["update", "bank", "--description", "second"], "");
    std::fs::copy(&saved, &db).unwrap();
    let out = v.cmd().args(["verify", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["ok"], false, "{j}");
    let f = &j["store"]["findings"][0];
    assert_eq!(f["problem"]["kind"], "version_mismatch", "{j}");
    assert_eq!(f["problem"]["stored"], 1, "{j}");
    assert_eq!(f["problem"]["logged"], 2, "{j}");
    let text = v.cmd().arg("verify").output().unwrap();
    assert_eq!(text.status.code(), Some(1));
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("the audit log's last write is version 2"),
        "{text}"
    );
    assert!(text.contains("vault NOT verified"), "{text}");
}

#[test]
fn stored_control_characters_and_escapes_are_escaped_in_text_output() {
    let v = V::new();
    // A description, a name with a bidi override and an actor, all holding terminal tricks.
    let mut c = v.cmd();
    c.env("CREDVAULT_ACTOR", "eve\u{1b}]0;pwned\u{7}");
    let out = c
        .args([
            "add",
            "website_login",
            "na\u{202e}me",
            "--field",
            "login_url=https://x.example/",
            "--field",
            "username=u\u{9b}31m",
            "--description",
            "line\u{1b}[2J\u{1b}[Hgone",
        ])
        .write_stdin("pw\n")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = |s: &str| {
        s.chars()
            .any(|c| c == '\u{1b}' || c == '\u{9b}' || c == '\u{202e}' || c == '\u{7}')
    };
    for args in [
        vec!["show", "na\u{202e}me"],
        vec!["list"],
        vec!["audit", "show"],
    ] {
        let text = v.ok(&args, "");
        assert!(!bad(&text), "{args:?} printed a raw control: {text:?}");
        assert!(
            text.contains("\\u{"),
            "{args:?}: nothing escaped in {text:?}"
        );
    }
    // JSON output keeps the values, JSON-escaped.
    let j: serde_json::Value =
        serde_json::from_str(&v.ok(&["--json", "show", "na\u{202e}me"], "")).unwrap();
    assert_eq!(j["description"], "line\u{1b}[2J\u{1b}[Hgone", "{j}");
}

fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

#[test]
fn an_outside_anchor_detects_a_restored_vault() {
    let v = V::new();
    add_login(&v, "site", "pw-1");
    let backup = v._dir.path().join("backup");
    copy_tree(&v.path, &backup);
    add_login(&v, "later", "pw-2");
    let line = v.ok(&["audit", "anchor"], "");
    let anchor: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(anchor["seq"].as_u64().unwrap() > 0 && anchor["mac"].is_string());
    let file = v._dir.path().join("kept-elsewhere.anchor");
    std::fs::write(&file, &line).unwrap();
    let f = file.to_str().unwrap();
    assert!(v
        .ok(&["audit", "verify", "--anchor", f], "")
        .contains("reaches the external anchor"));
    // The whole directory restored from the backup: consistent with itself...
    std::fs::remove_dir_all(&v.path).unwrap();
    copy_tree(&backup, &v.path);
    assert!(v.ok(&["audit", "verify"], "").contains("audit log intact"));
    // ...but behind the anchor kept outside it.
    let err = v.fails(&["audit", "verify", "--anchor", f], "");
    assert!(
        err.contains("NOT intact") && err.contains("against the anchor"),
        "{err}"
    );
    // A file that is not an anchor is a clear error.
    std::fs::write(&file, "not an anchor").unwrap();
    assert!(v
        .fails(&["audit", "verify", "--anchor", f], "")
        .contains("not a credvault audit anchor"));
}

#[test]
fn a_reveal_policy_tightened_on_the_command_line_holds() {
    let v = V::new();
    v.ok(
        &[
            "add",
            "website_login",
            "site",
            "--field",
            "login_url=https://x.example/login",
            "--field",
            "username=bot",
            "--reveal",
            "password=use-only",
        ],
        "pw-use-only-1",
    );
    let shown = v.ok(&["show", "site"], "");
    assert!(shown.contains("(reveal) password: use-only"), "{shown}");
    let json: serde_json::Value =
        serde_json::from_str(&v.ok(&["--json", "show", "site"], "")).unwrap();
    assert_eq!(json["reveal"]["password"], "use-only");
    let err = v.fails(&["reveal", "site", "--field", "password"], "");
    assert!(
        err.contains("use-only") && !err.contains("pw-use-only-1"),
        "{err}"
    );
    // A process still gets it.
    let out = v
        .cmd()
        .args([
            "run",
            "--no-masking",
            "--",
            "sh",
            "-c",
            "printf '%s' \"$PW\"",
        ])
        .env("PW", "cv://site/password")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "pw-use-only-1");
    // Never loosened; tightened further to write-only, after which no process gets it.
    let err = v.fails(&["update", "site", "--reveal", "password=revealable"], "");
    assert!(err.contains("never loosened"), "{err}");
    let err = v.fails(&["update", "site", "--reveal", "password=sometimes"], "");
    assert!(err.contains("revealable, use-only or write-only"), "{err}");
    let err = v.fails(&["update", "site", "--reveal", "username=write-only"], "");
    assert!(err.contains("not a secret field"), "{err}");
    v.ok(&["update", "site", "--reveal", "password=write-only"], "");
    let out = v
        .cmd()
        .args(["run", "--", "sh", "-c", "printf '%s' \"$PW\""])
        .env("PW", "cv://site/password")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("write-only"), "{err}");
}

#[test]
fn a_hotp_key_hands_out_each_counter_once_across_commands() {
    // RFC 4226 Appendix D: the key "12345678901234567890", counters 0, 1, 2.
    let v = V::new();
    v.ok(
        &["add", "hotp_key", "vpn", "--field", "secret=-"],
        "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n",
    );
    assert_eq!(v.ok(&["totp", "vpn"], ""), "755224\n");
    assert_eq!(v.ok(&["totp", "vpn"], ""), "287082\n");
    let json: serde_json::Value =
        serde_json::from_str(&v.ok(&["--json", "totp", "vpn"], "")).unwrap();
    assert_eq!(json["code"], "359152");
    assert_eq!(json["step"], 2);
    assert!(json["valid_until"].is_null(), "{json}");
    let err = v.fails(&["reveal", "vpn", "--field", "secret"], "");
    assert!(err.contains("write-only"), "{err}");
}

#[test]
fn a_vault_initialised_with_a_sealed_audit_log_shows_and_verifies_it() {
    let dir = tempfile::tempdir().unwrap();
    let v = V {
        path: dir.path().join("vault"),
        _dir: dir,
    };
    let out = v.ok(&["init", "--seal-audit"], "");
    assert!(out.contains("audit.seal.key"), "{out}");
    add_login(&v, "sealed-login-wombat", "pw-wombat-1");
    let mut log = String::new();
    for p in std::fs::read_dir(v.path.join("audit")).unwrap() {
        let p = p.unwrap().path();
        if p.extension().is_some_and(|e| e == "jsonl") {
            log.push_str(&std::fs::read_to_string(p).unwrap());
        }
    }
    assert!(
        !log.contains("sealed-login-wombat") && !log.contains("\"tester\""),
        "{log}"
    );
    let shown = v.ok(&["audit", "show"], "");
    assert!(
        shown.contains("created") && shown.contains("sealed-login-wombat"),
        "{shown}"
    );
    v.ok(&["audit", "verify"], "");
    v.ok(&["verify"], "");
    // The files alone: verifiable with the audit key, not readable.
    let audit_dir = v.path.join("audit");
    let err = v.fails(&["audit", "show", audit_dir.to_str().unwrap()], "");
    assert!(err.contains("sealed"), "{err}");
}

#[test]
fn a_client_sealed_only_tenant_refuses_plaintext_from_the_command_line() {
    let v = V::new();
    add_login(&v, "before", "pw-before-1");
    let out = v
        .cmd()
        .env("CREDVAULT_CLIENT_SEALED_ONLY", "other, default")
        .args([
            "add",
            "website_login",
            "plain",
            "--field",
            "login_url=https://x.example/",
            "--field",
            "username=u",
        ])
        .write_stdin("pw-plain-1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("client-sealed"), "{err}");
    v.fails(&["show", "plain"], "");
    // Metadata still changes; secret values do not.
    let ok = v
        .cmd()
        .env("CREDVAULT_CLIENT_SEALED_ONLY", "default")
        .args(["update", "before", "--description", "kept"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let out = v
        .cmd()
        .env("CREDVAULT_CLIENT_SEALED_ONLY", "default")
        .args(["update", "before", "--field", "password=-"])
        .write_stdin("pw-new-1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        v.ok(&["reveal", "before", "--field", "password"], ""),
        "pw-before-1\n"
    );
    let out = v
        .cmd()
        .env("CREDVAULT_CLIENT_SEALED_ONLY", "no such tenant!")
        .args(["list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("CREDVAULT_CLIENT_SEALED_ONLY"));
}
