//! `credvault run` masks a 1 GiB output stream with bounded memory: every occurrence of the
//! secret replaced, nothing else changed, and the run's peak resident size stays far below the
//! stream's size. Its own file, so no other test's processes share the measurement.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::process::{Command, Stdio};

const SECRET: &str = "Lg9-Secret/\"Value\" 7+Qx";
const TOTAL: u64 = 1 << 30;
const MARKER: &str = "[cv:big/password]";

/// Peak resident set size of a live process, in KiB (Linux `VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn one_gib_of_output_is_masked_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    let cv = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_credvault"));
        c.env("CREDVAULT_DIR", &vault)
            .env("CREDVAULT_CONFIG_DIR", vault.with_extension("config"))
            .env_remove("CREDVAULT_MASTER_KEY");
        c
    };
    assert!(cv().arg("init").output().unwrap().status.success());
    let mut add = cv()
        .args([
            "add",
            "http_basic_auth",
            "big",
            "--field",
            "user=u",
            "--field",
            "password=-",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut add.stdin.take().unwrap(), SECRET.as_bytes()).unwrap();
    assert!(add.wait().unwrap().success());

    let mut run = cv()
        .args([
            "run",
            "--",
            "sh",
            "-c",
            &format!("yes \"line with $S in it\" | head -c {TOTAL}"),
        ])
        .env("S", "cv://big/password")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = run.stdout.take().unwrap();
    let secret = memchr::memmem::Finder::new(SECRET.as_bytes());
    let marker = memchr::memmem::Finder::new(MARKER.as_bytes());
    let keep = MARKER.len().max(SECRET.len()) - 1;
    let mut buf = vec![0u8; 1 << 18];
    let mut window: Vec<u8> = Vec::new();
    let (mut total, mut leaks, mut markers, mut peak) = (0u64, 0usize, 0usize, None);
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
        // Search the new bytes together with the tail of the previous ones, counting only
        // occurrences that end in the new bytes.
        let old = window.len();
        window.extend_from_slice(&buf[..n]);
        leaks += secret
            .find_iter(&window)
            .filter(|&i| i + SECRET.len() > old)
            .count();
        markers += marker
            .find_iter(&window)
            .filter(|&i| i + MARKER.len() > old)
            .count();
        let cut = window.len().saturating_sub(keep);
        window.drain(..cut);
        if peak.is_none() && total > TOTAL * 3 / 4 {
            peak = Some(peak_rss_kib(run.id()));
        }
    }
    assert!(run.wait().unwrap().success());

    let line = format!("line with {SECRET} in it\n");
    let masked = format!("line with {MARKER} in it\n");
    let (full, rest) = (
        TOTAL / line.len() as u64,
        (TOTAL % line.len() as u64) as usize,
    );
    let tail_has_secret = rest >= "line with ".len() + SECRET.len();
    let tail_len = if tail_has_secret {
        rest - SECRET.len() + MARKER.len()
    } else {
        rest
    };
    assert_eq!(leaks, 0, "the secret got through");
    assert_eq!(markers as u64, full + u64::from(tail_has_secret));
    assert_eq!(total, full * masked.len() as u64 + tail_len as u64);
    let peak = peak.unwrap();
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB for a 1 GiB stream");
    eprintln!("1 GiB masked; peak RSS of credvault run: {peak} KiB");
}
