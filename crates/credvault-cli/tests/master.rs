//! Master keys in real providers through the CLI: `init --master`, `rotate master [--to]`,
//! `doctor`, and the faults an operator meets (provider down, wrong PIN, access denied, a
//! move killed half-way). SoftHSM2 and moto's KMS are started by `.ci/kms-services`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{add_portal, credvault_in, ok_in, run_in, service};

const PASSWORD: &str = "Tr0ub4dor&3-master";

fn reveal(dir: &Path) -> String {
    ok_in(dir, &["reveal", "portal", "--field", "password"], "")
}

fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{t:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The HSM tests take turns: SoftHSM2's file store may answer CKR_GENERAL_ERROR when two
/// processes change one token at the same moment.
static HSM_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn hsm_turn() -> std::sync::MutexGuard<'static, ()> {
    HSM_TURN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A PKCS#11 URI for a new key object in the test token, or `None` outside CI without one.
fn hsm_uri() -> Option<String> {
    let module = service("CREDVAULT_TEST_PKCS11_MODULE")?;
    let token = service("CREDVAULT_TEST_PKCS11_TOKEN")?;
    let pin = service("CREDVAULT_TEST_PKCS11_PIN_FILE")?;
    Some(format!(
        "pkcs11:token={token};object={}?module-path={module}&pin-source=file://{pin}",
        unique("cli")
    ))
}

struct Kms {
    url: String,
    id: String,
    secret: String,
    limited_id: String,
    limited_secret: String,
}

fn kms() -> Option<Kms> {
    Some(Kms {
        url: service("CREDVAULT_TEST_KMS_URL")?,
        id: service("CREDVAULT_TEST_KMS_KEY_ID")?,
        secret: service("CREDVAULT_TEST_KMS_SECRET")?,
        limited_id: service("CREDVAULT_TEST_KMS_LIMITED_KEY_ID")?,
        limited_secret: service("CREDVAULT_TEST_KMS_LIMITED_SECRET")?,
    })
}

impl Kms {
    /// `credvault` with the SDK's usual settings pointing at moto.
    fn cmd(&self, dir: &Path, url: &str, limited: bool) -> assert_cmd::Command {
        let mut c = credvault_in(dir);
        let (id, secret) = if limited {
            (&self.limited_id, &self.limited_secret)
        } else {
            (&self.id, &self.secret)
        };
        c.env("AWS_ENDPOINT_URL_KMS", url)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", id)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE");
        c
    }

    fn ok(&self, dir: &Path, args: &[&str], stdin: &str) -> String {
        let out = self
            .cmd(dir, &self.url, false)
            .args(args)
            .write_stdin(stdin)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A new KMS key, made as an operator would (boto3 is what .ci/kms-services installs).
    fn create_key(&self) -> String {
        let venv = std::env::var("CREDVAULT_TEST_VENV")
            .unwrap_or_else(|_| "/tmp/credvault-test-venv".into());
        let out = std::process::Command::new(format!("{venv}/bin/python"))
            .args(["-c", "import sys, boto3; print(boto3.client('kms', endpoint_url=sys.argv[1], region_name='us-east-1').create_key()['KeyMetadata']['KeyId'])", &self.url])
            .env("AWS_ACCESS_KEY_ID", &self.id)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}

/// The key file a move left behind, as its report names it (`the old key file PATH is no
/// longer needed`): outside the vault directory since `init` no longer puts it there.
fn old_key_file(dir: &Path, report: &str) -> PathBuf {
    let p = report
        .split("the old key file ")
        .nth(1)
        .and_then(|r| r.split(" is no longer needed").next())
        .unwrap_or_else(|| panic!("no old key file in: {report}"));
    let p = PathBuf::from(p);
    assert!(!p.starts_with(dir), "{}", p.display());
    p
}

fn vault() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("vault");
    (d, p)
}

#[test]
fn a_vault_whose_master_key_is_in_the_hsm_works_rotates_and_passes_doctor() {
    let _turn = hsm_turn();
    let Some(uri) = hsm_uri() else { return };
    let (_d, dir) = vault();
    let out = ok_in(&dir, &["init", "--master", &uri], "");
    assert!(out.contains("made now"), "{out}");
    assert!(
        !dir.join("master.key").exists(),
        "no key file when the key is in the HSM"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("master.uri"))
            .unwrap()
            .trim(),
        uri
    );
    add_portal(&dir, PASSWORD);
    assert_eq!(reveal(&dir).trim_end(), PASSWORD);

    let doc = ok_in(&dir, &["doctor"], "");
    assert!(doc.contains("not extractable"), "{doc}");
    assert!(doc.contains("opens with this master key"), "{doc}");
    assert!(!doc.contains("FAIL"), "{doc}");

    let rot = ok_in(&dir, &["rotate", "master"], "");
    assert!(rot.contains("version 2 is active"), "{rot}");
    assert!(rot.contains("1 data key(s) re-wrapped"), "{rot}");
    assert_eq!(reveal(&dir).trim_end(), PASSWORD);

    // init on an existing vault is refused, and the key is not touched.
    let again = run_in(&dir, &["init", "--master", &uri], "");
    assert!(!again.status.success());
    assert_eq!(reveal(&dir).trim_end(), PASSWORD);
}

#[test]
fn a_key_file_vault_moves_into_the_hsm_and_the_file_is_not_needed_afterwards() {
    let _turn = hsm_turn();
    let Some(uri) = hsm_uri() else { return };
    let (_d, dir) = vault();
    ok_in(&dir, &["init", "--seal-audit"], "");
    ok_in(&dir, &["tenant", "add", "team-b"], "");
    add_portal(&dir, PASSWORD);
    let moved = ok_in(&dir, &["rotate", "master", "--to", &uri], "");
    assert!(moved.contains("2 data key(s) re-wrapped"), "{moved}");
    assert!(moved.contains("no longer needed"), "{moved}");
    assert!(!dir.join("master.previous.uri").exists());

    // The old provider is removed: everything still opens, the sealed audit log included.
    std::fs::remove_file(old_key_file(&dir, &moved)).unwrap();
    assert_eq!(reveal(&dir).trim_end(), PASSWORD);
    let verify = run_in(&dir, &["verify"], "");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let log = ok_in(&dir, &["audit", "show"], "");
    assert!(log.contains("key_rotated"), "{log}");

    // Moving to where it is already is refused.
    let same = run_in(&dir, &["rotate", "master", "--to", &uri], "");
    assert_eq!(same.status.code(), Some(2));
}

#[test]
fn a_wrong_pin_or_a_missing_token_is_one_line_naming_the_provider_and_changes_nothing() {
    let _turn = hsm_turn();
    let Some(uri) = hsm_uri() else { return };
    let (d, dir) = vault();
    ok_in(&dir, &["init", "--master", &uri], "");
    add_portal(&dir, PASSWORD);
    let bad = d.path().join("bad-pin");
    std::fs::write(&bad, "000000\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let good = std::fs::read_to_string(dir.join("master.uri")).unwrap();
    let pin_at = good.find("pin-source=").unwrap();
    let wrong = format!("{}pin-source=file://{}\n", &good[..pin_at], bad.display());
    std::fs::write(dir.join("master.uri"), &wrong).unwrap();
    let out = run_in(&dir, &["reveal", "portal", "--field", "password"], "");
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("denied") && err.contains("pkcs11:"), "{err}");
    assert!(!err.contains("000000"));
    // Put right, nothing was lost.
    std::fs::write(dir.join("master.uri"), &good).unwrap();
    assert_eq!(reveal(&dir).trim_end(), PASSWORD);
}

#[test]
fn a_move_killed_half_way_opens_with_both_providers_and_finishes_when_run_again() {
    let Some(k) = kms() else { return };
    let (_d, dir) = vault();
    ok_in(&dir, &["init"], "");
    for i in 0..60 {
        ok_in(&dir, &["tenant", "add", &format!("t{i}")], "");
    }
    add_portal(&dir, PASSWORD);
    let to = format!("aws-kms://{}", k.create_key());
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("credvault"))
        .args(["rotate", "master", "--to", &to])
        .env("CREDVAULT_DIR", &dir)
        .env("CREDVAULT_CONFIG_DIR", common::config_dir(&dir))
        .env_remove("CREDVAULT_MASTER_KEY")
        .env("AWS_ENDPOINT_URL_KMS", &k.url)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", &k.id)
        .env("AWS_SECRET_ACCESS_KEY", &k.secret)
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed as soon as the move has begun (the previous provider recorded).
    let t0 = Instant::now();
    while !dir.join("master.previous.uri").exists() && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        dir.join("master.previous.uri").exists(),
        "the move finished before it could be killed; it must have been mid-way"
    );
    // Half-moved: the vault opens (with both providers) and reveals.
    assert_eq!(
        k.ok(&dir, &["reveal", "portal", "--field", "password"], "")
            .trim_end(),
        PASSWORD
    );
    // Run again: it resumes, finishes, and the key file is no longer needed.
    let out = k.ok(&dir, &["rotate", "master", "--to", &to], "");
    assert!(out.contains("(resumed)"), "{out}");
    assert!(!dir.join("master.previous.uri").exists());
    std::fs::remove_file(old_key_file(&dir, &out)).unwrap();
    assert_eq!(
        k.ok(&dir, &["reveal", "portal", "--field", "password"], "")
            .trim_end(),
        PASSWORD
    );
    let tenants = k.ok(&dir, &["tenant", "list"], "");
    assert_eq!(tenants.lines().count(), 61, "{tenants}");
    assert!(
        tenants.lines().all(|l| l.contains("master v1")),
        "{tenants}"
    );
}

#[test]
fn a_kms_vault_fails_closed_when_kms_is_down_or_denies_and_doctor_says_so() {
    let Some(k) = kms() else { return };
    let (_d, dir) = vault();
    let uri = format!("aws-kms://{}", k.create_key());
    let out = k.ok(&dir, &["init", "--master", &uri], "");
    assert!(out.contains("existing key"), "{out}");
    let c = k
        .cmd(&dir, &k.url, false)
        .args([
            "add",
            "website_login",
            "portal",
            "--field",
            "login_url=https://x.example/login",
            "--field",
            "username=bot",
        ])
        .write_stdin(PASSWORD)
        .output()
        .unwrap();
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    let doc = k.ok(&dir, &["doctor"], "");
    assert!(doc.contains("round trip") && !doc.contains("FAIL"), "{doc}");

    // KMS unreachable: a one-line error naming the provider, exit non-zero, no output.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = format!("http://127.0.0.1:{port}");
    let out = k
        .cmd(&dir, &down, false)
        .args(["reveal", "portal", "--field", "password"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("aws-kms") && err.contains("unreachable"),
        "{err}"
    );
    let doc = k.cmd(&dir, &down, false).arg("doctor").output().unwrap();
    assert_eq!(doc.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&doc.stdout).contains("FAIL  reachable"));

    // Access denied (this IAM user may not Decrypt): told apart from an outage.
    let out = k
        .cmd(&dir, &k.url, true)
        .args(["reveal", "portal", "--field", "password"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("denied"), "{err}");

    // Nothing was lost.
    assert_eq!(
        k.ok(&dir, &["reveal", "portal", "--field", "password"], "")
            .trim_end(),
        PASSWORD
    );
}

#[cfg(target_os = "linux")]
#[test]
fn the_kernel_keyring_is_refused_as_the_only_home_of_a_master_key_unless_asked() {
    let (_d, dir) = vault();
    let uri = format!("keychain:{}/master", unique("cv-cli"));
    let out = run_in(&dir, &["init", "--master", &uri], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("forgets"));
    assert!(!dir.join("vault.db").exists());
    let out = run_in(&dir, &["init", "--master", &uri, "--volatile-keychain"], "");
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(std::env::var_os("CI").is_none(), "kernel keyring: {err}");
        eprintln!("kernel keyring unavailable ({err}): skipped outside CI");
        return;
    }
    assert!(!dir.join("master.key").exists());
    add_portal(&dir, PASSWORD);
    assert_eq!(reveal(&dir).trim_end(), PASSWORD);
}

#[cfg(target_os = "linux")]
#[test]
fn a_key_file_moves_into_the_keychain_by_copying_its_text_nothing_rewrapped() {
    let (d, dir) = vault();
    ok_in(&dir, &["init"], "");
    add_portal(&dir, PASSWORD);
    let uri = format!("keychain:{}/master", unique("cv-move"));
    let out = run_in(
        &dir,
        &["rotate", "master", "--to", &uri, "--volatile-keychain"],
        "",
    );
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(std::env::var_os("CI").is_none(), "kernel keyring: {err}");
        eprintln!("kernel keyring unavailable ({err}): skipped outside CI");
        return;
    }
    let report = String::from_utf8(out.stdout).unwrap();
    assert!(report.contains("nothing re-wrapped"), "{report}");
    std::fs::remove_file(old_key_file(&dir, &report)).unwrap();
    assert_eq!(reveal(&dir).trim_end(), PASSWORD);
    // And on to a key file of the operator's choosing; a place holding another keyring is
    // refused.
    let file = d.path().join("keys/elsewhere.key");
    let out = ok_in(
        &dir,
        &[
            "rotate",
            "master",
            "--to",
            &format!("file:{}", file.display()),
        ],
        "",
    );
    assert!(out.contains("nothing re-wrapped"), "{out}");
    assert_eq!(reveal(&dir).trim_end(), PASSWORD);
    let (_d2, other) = vault();
    ok_in(&other, &["init"], "");
    let theirs = std::fs::read_to_string(other.join("master.uri")).unwrap();
    let out = run_in(&dir, &["rotate", "master", "--to", theirs.trim_end()], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another keyring"));
    assert_eq!(reveal(&dir).trim_end(), PASSWORD);
}
