//! `credvault session` and `credvault lease` as separate processes on one vault: saved states
//! round-trip and expire into exit 3; leases keep the credential's limit across processes, a
//! login lease is alone, a killed holder's lease expires and the next waiter proceeds, and a
//! wait that runs out exits 75.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

/// A `credvault` process on the vault, stdout and stderr captured.
fn cmd(vault: &Path) -> Command {
    let mut c = common::process_in(vault);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn run(vault: &Path, args: &[&str], stdin: &str) -> Output {
    common::run_in(vault, args, stdin)
}

fn ok(vault: &Path, args: &[&str], stdin: &str) -> String {
    common::ok_in(vault, args, stdin)
}

fn vault() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let v = tmp.path().join("vault");
    ok(&v, &["init"], "");
    ok(
        &v,
        &[
            "add",
            "website_login",
            "portal",
            "--field",
            "login_url=https://portal.example.com/login",
            "--field",
            "username=robot",
            "--field",
            "password=-",
        ],
        "pw-s3cr3t\n",
    );
    (tmp, v)
}

const STATE: &str = r#"{"cookies":[{"name":"sid","value":"cookie-s3cr3t","domain":"portal.example.com","path":"/","httpOnly":true,"secure":true,"sameSite":"Lax"}],"origins":[{"origin":"https://portal.example.com","localStorage":[{"name":"t","value":"local-s3cr3t"}]}]}"#;

#[test]
fn a_saved_state_loads_in_another_process_and_is_gone_after_rm() {
    let (_tmp, v) = vault();
    let none = run(&v, &["session", "load", "portal"], "");
    assert_eq!(none.status.code(), Some(3));
    assert!(none.stdout.is_empty());
    let err = String::from_utf8(none.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    ok(
        &v,
        &["session", "save", "portal", "--profile", "work"],
        STATE,
    );
    let loaded = ok(&v, &["session", "load", "portal", "--profile", "work"], "");
    let want: serde_json::Value = serde_json::from_str(STATE).unwrap();
    let got: serde_json::Value = serde_json::from_str(&loaded).unwrap();
    assert_eq!(got, want);
    let shown = ok(&v, &["--json", "session", "show", "portal"], "");
    let doc: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(doc["sessions"][0]["profile"], "work");
    assert_eq!(doc["sessions"][0]["version"], 1);
    assert_eq!(doc["config"]["multiple"], true);
    assert!(!shown.contains("s3cr3t"));
    let list = ok(&v, &["--json", "session", "list"], "");
    let rows: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(rows[0]["name"], "portal");
    assert_eq!(rows[0]["profile"], "work");
    assert!(!list.contains("s3cr3t"));
    // A malformed state is refused with the member named and nothing saved.
    let bad = run(
        &v,
        &["session", "save", "portal"],
        r#"{"cookies":[{"name":"a"}]}"#,
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cookies[0].value"));
    assert_eq!(
        run(&v, &["session", "load", "portal"], "").status.code(),
        Some(3)
    );
    ok(&v, &["session", "rm", "portal"], "");
    assert_eq!(
        run(&v, &["session", "load", "portal", "--profile", "work"], "")
            .status
            .code(),
        Some(3)
    );
    // The audit log holds the events and none of the values.
    let audit = ok(&v, &["audit", "show"], "");
    for a in ["session_saved", "session_restored", "session_removed"] {
        assert!(audit.contains(a), "{a} missing");
    }
    assert!(!audit.contains("s3cr3t"));
}

#[test]
fn settings_are_checked_and_shown() {
    let (_tmp, v) = vault();
    let shown = ok(
        &v,
        &[
            "--json",
            "session",
            "config",
            "portal",
            "--multiple",
            "no",
            "--idle",
            "15m",
            "--store",
            "cookies,session",
        ],
        "",
    );
    let c: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(c["multiple"], false);
    assert_eq!(c["idle_ms"], 900_000);
    assert_eq!(c["store"]["local"], false);
    for bad in [
        vec!["session", "config", "portal", "--max-concurrent", "0"],
        vec!["session", "config", "portal", "--idle", "soon"],
        vec!["session", "config", "portal", "--store", "cookies,flash"],
        // A proxy must be an http_proxy credential.
        vec!["session", "config", "portal", "--proxy", "portal"],
    ] {
        assert_eq!(run(&v, &bad, "").status.code(), Some(2), "{bad:?}");
    }
    ok(
        &v,
        &[
            "add",
            "http_proxy",
            "residential",
            "--field",
            "url=http://proxy.example.net:8080",
            "--field",
            "username=u",
            "--field",
            "password=-",
        ],
        "proxy-pw\n",
    );
    let shown = ok(
        &v,
        &[
            "--json",
            "session",
            "config",
            "portal",
            "--proxy",
            "residential",
            "--proxy-region",
            "de",
        ],
        "",
    );
    let c: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(c["proxy"]["mode"], "via");
    assert_eq!(c["proxy"]["credential"], "residential");
    assert_eq!(c["proxy"]["region"], "de");
    // Settings persist: shown again by another process, unchanged.
    let again: serde_json::Value =
        serde_json::from_str(&ok(&v, &["--json", "session", "config", "portal"], "")).unwrap();
    assert_eq!(again, c);
}

/// A child command that records how many holders it saw beside itself: it creates its own
/// file in `dir`, counts the files, waits, and removes its file.
fn holder_script(dir: &Path, tag: &str) -> String {
    format!(
        "touch {d}/$$; n=$(ls {d} | wc -l); echo \"{tag} $n\" >> {d}.log; sleep 0.3; rm {d}/$$",
        d = dir.display()
    )
}

fn spawn_lease(v: &Path, extra: &[&str], script: &str) -> Child {
    let mut args = vec!["lease", "portal", "--wait", "60"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    cmd(v).args(&args).stdin(Stdio::null()).spawn().unwrap()
}

#[test]
fn leases_across_processes_keep_the_limit_and_a_login_alone() {
    let (tmp, v) = vault();
    ok(
        &v,
        &["session", "config", "portal", "--max-concurrent", "2"],
        "",
    );
    let dir = tmp.path().join("holders");
    std::fs::create_dir(&dir).unwrap();
    let mut children = Vec::new();
    for i in 0..8 {
        let login = i == 3 || i == 6;
        let extra: &[&str] = if login { &["--login"] } else { &[] };
        children.push(spawn_lease(
            &v,
            extra,
            &holder_script(&dir, if login { "login" } else { "run" }),
        ));
    }
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let log = std::fs::read_to_string(dir.with_extension("log")).unwrap();
    let mut runs = 0;
    let mut max_runs = 0;
    for line in log.lines() {
        let (tag, n) = line.split_once(' ').unwrap();
        let n: usize = n.trim().parse().unwrap();
        match tag {
            "login" => assert_eq!(n, 1, "a login lease shared the account: {log}"),
            _ => {
                runs += 1;
                max_runs = max_runs.max(n);
            }
        }
    }
    assert_eq!(log.lines().count(), 8, "{log}");
    assert_eq!(runs, 6);
    assert!(max_runs <= 2, "more than 2 holders at once: {log}");
    // The limit was reached (6 runs of 0.3 s each, 2 at a time, started together).
    assert_eq!(max_runs, 2, "{log}");
}

#[test]
fn a_killed_holders_lease_expires_and_the_next_waiter_proceeds() {
    let (tmp, v) = vault();
    let marker = tmp.path().join("holding");
    let mut holder = cmd(&v)
        .args([
            "lease",
            "portal",
            "--login",
            "--ttl",
            "1",
            "--",
            "sh",
            "-c",
            &format!("touch {}; exec sleep 30", marker.display()),
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !marker.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the holder never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // While it holds the login lease, a short wait runs out: exit 75, one line.
    let busy = run(&v, &["lease", "portal", "--wait", "0.3", "--", "true"], "");
    assert_eq!(busy.status.code(), Some(75));
    assert_eq!(String::from_utf8_lossy(&busy.stderr).lines().count(), 1);
    // The holder dies without releasing (SIGKILL); its child is left running.
    holder.kill().unwrap();
    holder.wait().unwrap();
    let t = Instant::now();
    let next = run(&v, &["lease", "portal", "--wait", "20", "--", "true"], "");
    assert!(
        next.status.success(),
        "{}",
        String::from_utf8_lossy(&next.stderr)
    );
    // Not before the dead holder's lease ran out (1 s after its last heartbeat).
    assert!(t.elapsed() < Duration::from_secs(15));
    let audit = ok(&v, &["audit", "show"], "");
    assert!(audit.contains("lease_expired"), "{audit}");
    let _ = Command::new("pkill")
        .args(["-f", &marker.display().to_string()])
        .status();
}

/// `serve --smtp-listen` receives a 2FA email sent with Python's smtplib; `tfa wait` in
/// another process prints its code once, then times out with exit 75.
#[test]
fn serve_receives_two_factor_mail_and_tfa_wait_prints_the_code_once() {
    use std::io::BufRead;
    let (_tmp, v) = vault();
    let address = ok(
        &v,
        &["tfa", "address", "portal", "--domain", "mail.example.net"],
        "",
    );
    let address = address.trim().to_owned();
    assert!(
        address.starts_with("vault+") && address.ends_with("@mail.example.net"),
        "{address}"
    );
    ok(
        &v,
        &["tfa", "rules", "portal", "--from", "@portal.example.com"],
        "",
    );
    let mut server = Reaped(
        cmd(&v)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--insecure-http",
                "--host",
                "vault.localhost=default",
                "--smtp-listen",
                "127.0.0.1:0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let err = server.0.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(err).lines();
    let smtp: std::net::SocketAddr = loop {
        let line = lines.next().expect("serve ended").unwrap();
        if let Some(a) = line.split("smtp://").nth(1) {
            break a.trim().parse().unwrap();
        }
    };
    let python = std::env::var("CREDVAULT_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = r#"
import smtplib, sys
from email.message import EmailMessage
port, to = sys.argv[1:3]
m = EmailMessage()
m['From'] = 'Portal <no-reply@portal.example.com>'
m['To'] = to
m['Subject'] = 'Your one-time passcode'
m.set_content('Use 604211 to finish signing in. Reference 55512345. Do not share it.')
with smtplib.SMTP('127.0.0.1', int(port), timeout=10) as s:
    s.send_message(m)
"#;
    let sent = Command::new(&python)
        .args(["-c", script, &smtp.port().to_string(), &address])
        .output();
    match sent {
        Ok(o) => assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but {python} cannot run: {e}"
            );
            drop(server);
            return;
        }
    }
    let code = ok(&v, &["tfa", "wait", "portal", "--timeout", "10"], "");
    assert_eq!(code, "604211\n");
    let again = run(&v, &["tfa", "wait", "portal", "--timeout", "0.2"], "");
    assert_eq!(again.status.code(), Some(75));
    drop(server);
    let audit = ok(&v, &["audit", "show"], "");
    assert!(audit.contains("tfa_code_received") && audit.contains("tfa_code_delivered"));
    assert!(!audit.contains("604211") && !audit.contains("55512345"));
}

/// A child process killed and reaped when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tfa poll` reads an `imap_mailbox` (Dovecot from `.ci/tester-services`; mail put there with
/// Python's `imaplib`), and `tfa wait` prints the code it found.
#[test]
fn tfa_poll_reads_a_real_mailbox() {
    let (Ok(imap), Ok(password)) = (
        std::env::var("CREDVAULT_TEST_IMAP"),
        std::env::var("CREDVAULT_TEST_TESTER_PASSWORD"),
    ) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but CREDVAULT_TEST_IMAP is not"
        );
        return;
    };
    let (_tmp, v) = vault();
    let (host, port) = imap.rsplit_once(':').unwrap();
    ok(
        &v,
        &[
            "add",
            "imap_mailbox",
            "inbox",
            "--field",
            &format!("host={host}"),
            "--field",
            &format!("port={port}"),
            "--field",
            "security=none",
            "--field",
            "user=credvault",
            "--field",
            "password=-",
        ],
        &format!("{password}\n"),
    );
    // Whatever an earlier run left is read first.
    ok(&v, &["tfa", "poll", "inbox"], "");
    let address = ok(
        &v,
        &["tfa", "address", "portal", "--domain", "mail.example.net"],
        "",
    );
    let python = std::env::var("CREDVAULT_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = r#"
import imaplib, sys, time
host, port, pw, to = sys.argv[1:5]
m = imaplib.IMAP4(host, int(port))
m.login('credvault', pw)
msg = ('Delivered-To: %s\r\nFrom: no-reply@portal.example.com\r\nSubject: Your code\r\n\r\n'
       'Your one-time code is 275531. Ticket 88110044.\r\n' % to).encode()
m.append('INBOX', None, imaplib.Time2Internaldate(time.time()), msg)
m.logout()
"#;
    let out = Command::new(&python)
        .args(["-c", script, host, port, &password, address.trim()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let polled = ok(&v, &["--json", "tfa", "poll", "inbox"], "");
    let r: serde_json::Value = serde_json::from_str(&polled).unwrap();
    assert_eq!(
        (r["messages"].as_u64(), r["stored"].as_u64()),
        (Some(1), Some(1)),
        "{polled}"
    );
    assert_eq!(
        ok(&v, &["tfa", "wait", "portal", "--timeout", "5"], ""),
        "275531\n"
    );
}
