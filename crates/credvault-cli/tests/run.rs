//! End-to-end tests of `credvault run`, `inject` and `mask` with real processes: a child that
//! prints its secret plainly, base64-, URL- and JSON-encoded and split across writes on both
//! streams; exit codes and signals passed through; `.env` files and templates; owner-only
//! output files; references to the kernel keyring.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Std, Stdio};
use std::time::Duration;

use assert_cmd::Command;
use base64::Engine as _;

/// Chosen so that every encoding changes it: `/`, `"`, `+`, `&`, `=` and a space.
const SECRET: &str = "gh0_Zq9X/\"Vault\" y+&=Kp7Wm3";
const PASSWORD: &str = "Tr0ub4dor&3-horse-battery";

struct V {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl V {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault");
        let v = Self { dir, path };
        v.ok(&["init"], "");
        v.ok(
            &[
                "add",
                "http_basic_auth",
                "GitHub bot",
                "--field",
                "user=bot",
                "--field",
                "password=-",
            ],
            SECRET,
        );
        v.ok(
            &[
                "add",
                "postgres",
                "db",
                "--env",
                "staging",
                "--field",
                "host=db.internal",
                "--field",
                "database=app",
                "--field",
                "user=app",
                "--field",
                "password=-",
            ],
            PASSWORD,
        );
        v
    }

    fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("credvault").unwrap();
        c.env("CREDVAULT_DIR", &self.path)
            .env("CREDVAULT_CONFIG_DIR", self.path.with_extension("config"))
            .env_remove("CREDVAULT_MASTER_KEY")
            .env_remove("CREDVAULT_TENANT")
            .env("CREDVAULT_ACTOR", "tester")
            .current_dir(self.dir.path());
        c
    }

    fn ok(&self, args: &[&str], stdin: &str) -> String {
        let out = self.cmd().args(args).write_stdin(stdin).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn accessed(&self) -> Vec<serde_json::Value> {
        self.ok(&["--json", "audit", "show"], "")
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| e["action"] == "accessed")
            .collect()
    }
}

/// Percent-encoding of every byte but unreserved ones (RFC 3986), written here independently
/// of the DLP crate.
fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn forms(secret: &str) -> Vec<String> {
    let json = serde_json::to_string(secret).unwrap();
    vec![
        secret.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(secret),
        percent(secret),
        json[1..json.len() - 1].to_owned(),
    ]
}

/// The child: run by the tests below as this test binary itself (`--ignored --exact`), with
/// `CV_CHILD=1`. Prints the secret from `$SECRET` in every form on both streams, once split
/// across two writes with a pause between, then exits with `$CV_EXIT`.
#[test]
#[ignore = "run as a child process by the tests in this file"]
fn child_prints_its_secret() {
    if std::env::var_os("CV_CHILD").is_none() {
        return;
    }
    let secret = std::env::var("SECRET").unwrap();
    if std::env::var_os("CV_BINARY").is_some() {
        std::io::stdout().write_all(&binary(&secret)).unwrap();
        std::process::exit(0);
    }
    for mut w in [
        Box::new(std::io::stdout()) as Box<dyn Write>,
        Box::new(std::io::stderr()),
    ] {
        for (i, f) in forms(&secret).iter().enumerate() {
            writeln!(w, "form {i}: {f}").unwrap();
        }
        let (a, b) = secret.split_at(7);
        write!(w, "split: {a}").unwrap();
        w.flush().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        writeln!(w, "{b} end").unwrap();
        w.flush().unwrap();
    }
    let code = std::env::var("CV_EXIT").map_or(0, |c| c.parse().unwrap());
    std::process::exit(code);
}

/// Every byte value, the secret, every byte value backwards (invalid UTF-8 included).
fn binary(secret: &str) -> Vec<u8> {
    let mut b: Vec<u8> = (0..=255u8).collect();
    b.extend_from_slice(secret.as_bytes());
    b.extend((0..=255u8).rev());
    b
}

#[test]
fn binary_output_passes_unchanged_but_for_the_masked_span() {
    let v = V::new();
    let out = child(&v).env("CV_BINARY", "1").output().unwrap();
    assert!(out.status.success());
    let want = binary("[cv:GitHub bot/password]");
    // The test harness prints its `running 1 test` line first; the blob follows it exactly.
    assert!(out.stdout.ends_with(&want), "{:?}", out.stdout);
    let head = String::from_utf8(out.stdout[..out.stdout.len() - want.len()].to_vec()).unwrap();
    assert!(head.trim().starts_with("running 1 test"), "{head:?}");
}

fn child(v: &V) -> Command {
    let mut c = v.cmd();
    c.arg("run")
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_prints_its_secret",
            "--nocapture",
        ])
        .env("CV_CHILD", "1")
        .env("SECRET", "cv://GitHub bot/password");
    c
}

#[test]
fn masks_every_form_on_both_streams_and_audits_one_access() {
    let v = V::new();
    let before = v.accessed().len();
    let out = child(&v).env("CV_EXIT", "0").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, stream) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let text = String::from_utf8_lossy(stream);
        for f in forms(SECRET) {
            assert!(!text.contains(&f), "{name} leaks {f:?}:\n{text}");
        }
        assert!(!text.contains("Zq9X/"), "{name} leaks a part:\n{text}");
        // Four forms and the split write, each replaced by the marker.
        assert_eq!(
            text.matches("[cv:GitHub bot/password]").count(),
            5,
            "{name}:\n{text}"
        );
        assert!(
            text.contains("split: [cv:GitHub bot/password] end"),
            "{text}"
        );
    }
    let events = v.accessed();
    assert_eq!(events.len(), before + 1);
    let e = &events[before];
    assert_eq!(e["resource"]["name"], "GitHub bot");
    let exe = std::env::current_exe().unwrap();
    let service = exe.file_name().unwrap().to_str().unwrap();
    assert_eq!(e["details"]["service"], service);
    assert_eq!(e["details"]["fields"], serde_json::json!(["password"]));
}

#[test]
fn no_masking_passes_output_through() {
    let v = V::new();
    let out = v
        .cmd()
        .args([
            "run",
            "--no-masking",
            "--",
            "sh",
            "-c",
            "printf '%s' \"$SECRET\"",
        ])
        .env("SECRET", "cv://GitHub bot/password")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), SECRET);
}

#[test]
fn exit_codes_and_signal_deaths_pass_through() {
    let v = V::new();
    for (script, code) in [
        ("exit 0", 0),
        ("exit 1", 1),
        ("exit 137", 137),
        ("kill -KILL $$", 137),
        ("kill -TERM $$", 143),
    ] {
        let out = v
            .cmd()
            .args(["run", "--", "sh", "-c", script])
            .env("SECRET", "cv://GitHub bot/password")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{script}");
    }
    // The child's own exit code, with masked output.
    let out = child(&v).env("CV_EXIT", "42").output().unwrap();
    assert_eq!(out.status.code(), Some(42));
}

#[test]
fn signals_sent_to_run_reach_the_command() {
    let v = V::new();
    let mut run = Std::new(env!("CARGO_BIN_EXE_credvault"))
        .env("CREDVAULT_DIR", &v.path)
        .env_remove("CREDVAULT_MASTER_KEY")
        .env("SECRET", "cv://GitHub bot/password")
        .args([
            "run",
            "--",
            "sh",
            "-c",
            "trap 'echo \"got TERM $SECRET\"; exit 7' TERM; echo \"ready $SECRET\"; \
             while :; do sleep 0.05; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(run.stdout.take().unwrap());
    let mut first = String::new();
    // Output that cannot start a secret is not held back: `ready` arrives while it runs.
    lines.read_line(&mut first).unwrap();
    assert_eq!(first, "ready [cv:GitHub bot/password]\n");
    let killed = Std::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut rest = String::new();
    lines.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "got TERM [cv:GitHub bot/password]\n");
    assert_eq!(run.wait().unwrap().code(), Some(7));
}

#[test]
fn env_files_and_templates_reach_only_the_command() {
    let v = V::new();
    let env_file = v.dir.path().join("app.env");
    std::fs::write(
        &env_file,
        "# the app's settings\n\
         DATABASE_URL=\"postgres://app:{{ cv://db/password?env=staging }}@db.internal/app\"\n\
         TOKEN='cv://GitHub bot/password'\n\
         PLAIN=hello\n",
    )
    .unwrap();
    let seen = v.dir.path().join("seen.txt");
    let out = v
        .cmd()
        .args(["run", "--env-file"])
        .arg(&env_file)
        .args([
            "--",
            "sh",
            "-c",
            "printf '%s\\n%s\\n%s\\n%s\\n' \"$DATABASE_URL\" \"$TOKEN\" \"$PLAIN\" \
             \"${CREDVAULT_MASTER_KEY-unset}\" > seen.txt; echo \"$DATABASE_URL\"",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        format!("postgres://app:{PASSWORD}@db.internal/app\n{SECRET}\nhello\nunset\n")
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "postgres://app:[cv:db/password?env=staging]@db.internal/app\n"
    );
    // Both credentials revealed in one batch: two events, one run.
    let events = v.accessed();
    let last: Vec<_> = events.iter().rev().take(2).collect();
    assert!(last.iter().all(|e| e["details"]["service"] == "sh"));
}

#[test]
fn bad_references_fail_before_the_command_starts() {
    let v = V::new();
    let marker = v.dir.path().join("started");
    let script = format!("touch {}", marker.display());
    for (value, code, says) in [
        ("cv://only-a-name", 2, "$SECRET: secret reference at byte 0"),
        ("cv://no such/password", 1, "no such/password: "),
        ("cv://GitHub bot/nofield", 1, "nofield"),
        (
            "cv://db/password?env=production",
            1,
            "db/password?env=production",
        ),
        (
            "keychain://svc/acct?x=1",
            2,
            "keychain:// takes no parameters",
        ),
    ] {
        let out = v
            .cmd()
            .args(["run", "--", "sh", "-c", &script])
            .env("SECRET", value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{value}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.starts_with("credvault: ") && err.contains(says),
            "{value}: {err}"
        );
        assert!(!err.contains(SECRET));
        assert!(!marker.exists(), "{value}: the command ran");
    }
    let out = v
        .cmd()
        .args(["run", "--", "no-such-command-anywhere"])
        .env("SECRET", "cv://GitHub bot/password")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn inject_renders_to_stdout_or_an_owner_only_file() {
    let v = V::new();
    let tpl = v.dir.path().join("config.tpl");
    std::fs::write(
        &tpl,
        "token: {{ cv://GitHub bot/password }}\ndb: {{cv://db/password?env=staging}}\nother: {{ x }}\n",
    )
    .unwrap();
    let want = format!("token: {SECRET}\ndb: {PASSWORD}\nother: {{{{ x }}}}\n");
    let tpl_s = tpl.to_str().unwrap();
    assert_eq!(v.ok(&["inject", "-i", tpl_s], ""), want);
    assert_eq!(
        v.ok(&["inject"], &std::fs::read_to_string(&tpl).unwrap()),
        want
    );

    // A new file under umask 000 is still owner-only; an existing one is replaced by one.
    let out = v.dir.path().join("config.yml");
    let inject_under_umask0 = |target: &Path| {
        let st = Std::new("sh")
            .arg("-c")
            .arg("umask 000; exec \"$0\" inject -i \"$1\" -o \"$2\"")
            .arg(env!("CARGO_BIN_EXE_credvault"))
            .arg(&tpl)
            .arg(target)
            .env("CREDVAULT_DIR", &v.path)
            .env_remove("CREDVAULT_MASTER_KEY")
            .current_dir(v.dir.path())
            .status()
            .unwrap();
        assert!(st.success());
    };
    inject_under_umask0(&out);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), want);
    assert_eq!(mode(&out), 0o600);
    std::fs::write(&out, "old").unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    inject_under_umask0(&out);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), want);
    assert_eq!(mode(&out), 0o600);

    // A symlink planted at the output path is replaced, never followed.
    let victim = v.dir.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    let link = v.dir.path().join("link.yml");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    inject_under_umask0(&link);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    assert!(std::fs::symlink_metadata(&link).unwrap().is_file());
    assert_eq!(mode(&link), 0o600);
    // No temporary file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(v.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".credvault-inject-")
        })
        .collect();
    assert!(leftovers.is_empty());
}

fn git_available() -> bool {
    let ok = Std::new("git")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok || std::env::var_os("CI").is_none(),
        "git is required when CI is set"
    );
    ok
}

#[test]
fn inject_refuses_a_git_path_that_is_not_ignored() {
    if !git_available() {
        eprintln!("git not installed: skipped outside CI");
        return;
    }
    let v = V::new();
    let repo = v.dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let git = |args: &[&str]| {
        let st = Std::new("git")
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(st.status.success(), "{args:?}");
    };
    git(&["init", "-q"]);
    std::fs::write(repo.join(".gitignore"), "secrets.env\n").unwrap();
    let tpl = v.dir.path().join("t.tpl");
    std::fs::write(&tpl, "T={{ cv://GitHub bot/password }}\n").unwrap();
    let inject = |out: &str, force: bool| {
        let mut c = v.cmd();
        c.args(["inject", "-i"])
            .arg(&tpl)
            .arg("-o")
            .arg(repo.join(out));
        if force {
            c.arg("--force");
        }
        c.output().unwrap()
    };
    let refused = inject("config.env", false);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8(refused.stderr).unwrap();
    assert!(
        err.contains("not ignored") && err.contains("--force"),
        "{err}"
    );
    assert!(!repo.join("config.env").exists());
    // A file in a subdirectory of the work tree is refused too.
    std::fs::create_dir(repo.join("sub")).unwrap();
    assert_eq!(inject("sub/config.env", false).status.code(), Some(1));
    // Ignored: written.
    assert!(inject("secrets.env", false).status.success());
    assert_eq!(
        std::fs::read_to_string(repo.join("secrets.env")).unwrap(),
        format!("T={SECRET}\n")
    );
    // Tracked, even if it matches .gitignore: refused.
    git(&["add", "-f", "secrets.env"]);
    assert_eq!(inject("secrets.env", false).status.code(), Some(1));
    // --force writes anyway.
    assert!(inject("config.env", true).status.success());
    assert_eq!(mode(&repo.join("config.env")), 0o600);
}

#[test]
fn mask_filters_a_pipeline() {
    let v = V::new();
    let input = format!(
        "plain {SECRET}\nb64 {}\npct {}\n",
        base64::engine::general_purpose::STANDARD.encode(SECRET),
        percent(SECRET)
    );
    let want = "plain [cv:GitHub bot/password]\nb64 [cv:GitHub bot/password]\npct [cv:GitHub bot/password]\n";
    assert_eq!(
        v.ok(&["mask", "--ref", "cv://GitHub bot/password"], &input),
        want
    );
    let out = v
        .cmd()
        .args(["mask", "--from-env"])
        .env("GH", "cv://GitHub bot/password")
        .write_stdin(input.clone())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
    let out = v.cmd().arg("mask").write_stdin(input).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

#[cfg(target_os = "linux")]
#[test]
fn keychain_references_read_the_kernel_keyring() {
    let store: std::sync::Arc<keyring_core::CredentialStore> =
        match linux_keyutils_keyring_store::Store::new() {
            Ok(s) => s,
            Err(e) => {
                assert!(std::env::var_os("CI").is_none(), "kernel keyring: {e}");
                eprintln!("kernel keyring unavailable ({e}): skipped outside CI");
                return;
            }
        };
    let service = format!("credvault-test-{}", std::process::id());
    let entry = keyring_core::Entry::new_in_store(&store, &service, "deploy").unwrap();
    if let Err(e) = entry.set_password("kr-Secret/Value+99") {
        assert!(std::env::var_os("CI").is_none(), "kernel keyring: {e}");
        eprintln!("kernel keyring refused a key ({e}): skipped outside CI");
        return;
    }
    let v = V::new();
    let out = v
        .cmd()
        .args([
            "run",
            "--",
            "sh",
            "-c",
            "printf '%s' \"$KEY\" > key.txt; echo \"key=$KEY\"",
        ])
        .env("KEY", format!("keychain://{service}/deploy"))
        .output()
        .unwrap();
    let _ = entry.delete_credential();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(v.dir.path().join("key.txt")).unwrap(),
        "kr-Secret/Value+99"
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("key=[cv:keychain:{service}/deploy]\n")
    );
    // A missing entry is a clear error, and the command does not run.
    let out = v
        .cmd()
        .args(["run", "--", "true"])
        .env("KEY", format!("keychain://{service}/absent"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("no such keychain entry"));
}
