//! `credvault serve` and `credvault apikey` end to end: a vault made with the CLI, a key made
//! with the CLI, the real binary serving TLS on a loopback port, revocation taking effect on
//! the next request, the certificate reloaded on SIGHUP, and a clean exit on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::{credvault_in, ok_in as run};
use credvault_test::https::{Ca, Client, Req};

struct Server {
    child: Child,
    addr: std::net::SocketAddr,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Server {
    fn start(dir: &std::path::Path, args: &[&str]) -> Self {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("credvault"))
            .env("CREDVAULT_DIR", dir)
            .env("CREDVAULT_CONFIG_DIR", common::config_dir(dir))
            .env_remove("CREDVAULT_MASTER_KEY")
            .env_remove("CREDVAULT_TENANT")
            .env_remove("CREDVAULT_DATABASE_URL")
            .env("CREDVAULT_ACTOR", "tester")
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server's ready line");
        let addr = line
            .rsplit("://")
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("not a ready line: {line}"));
        Self {
            child,
            addr,
            stderr: rx,
        }
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// Waits for a stderr line containing `needle`.
    fn said(&self, needle: &str) -> String {
        loop {
            let line = self
                .stderr
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("no line with {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_answers_with_cli_made_keys_honours_revocation_reloads_on_sighup_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    run(&dir, &["init"], "");
    run(
        &dir,
        &[
            "add",
            "website_login",
            "stripe-live",
            "--field",
            "login_url=https://x.example/login",
            "--field",
            "username=bot",
        ],
        "hunter2 but longer\n",
    );
    let made = run(
        &dir,
        &[
            "--json",
            "apikey",
            "create",
            "--tenant",
            "default",
            "--scope",
            "read,reveal",
            "--name",
            "billing-bot",
        ],
        "",
    );
    let made: serde_json::Value = serde_json::from_str(&made).unwrap();
    let key = made["key"].as_str().unwrap().to_owned();
    let id = made["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("cvk_") && key[4..16] == id, "{key}");

    let ca = Ca::new("cli test CA");
    let (cert, private, first_der) = ca.leaf(&["acme.localhost"]);
    let (cert_path, key_path) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, private).unwrap();
    let server = Server::start(
        &dir,
        &[
            "--host",
            "acme.localhost=default",
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    );
    let client = Client {
        addr: server.addr,
        ca: ca.der.clone(),
    };

    let list = client.send(Req::new("acme.localhost", "GET", "/api/credentials").key(&key));
    assert_eq!(list.status, 200, "{}", String::from_utf8_lossy(&list.body));
    let cred = list.json()["credentials"][0].clone();
    assert_eq!(cred["name"], "stripe-live");
    let path = format!("/api/credentials/{}/reveal", cred["id"].as_str().unwrap());
    let rv = client.send(
        Req::new("acme.localhost", "POST", &path)
            .key(&key)
            .body(br#"{"fields":["password"]}"#),
    );
    assert_eq!(rv.status, 200, "{}", String::from_utf8_lossy(&rv.body));
    assert_eq!(rv.json()["fields"]["password"], "hunter2 but longer");

    // The list shows the key's id and use, never the key.
    let listed = run(&dir, &["apikey", "list"], "");
    assert!(
        listed.contains(&id) && listed.contains("billing-bot"),
        "{listed}"
    );
    assert!(!listed.contains(&key[16..]), "{listed}");

    // Revoked in another process: refused on the next request.
    run(&dir, &["apikey", "revoke", &id], "");
    let r = client.send(Req::new("acme.localhost", "GET", "/api/credentials").key(&key));
    assert_eq!(r.status, 401);
    assert!(run(&dir, &["apikey", "list"], "").contains("REVOKED"));

    // SIGHUP: a new certificate for new connections.
    let (cert, private, second_der) = ca.leaf(&["acme.localhost"]);
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, private).unwrap();
    let before = client
        .connect("acme.localhost", client.config(&[&rustls::version::TLS13]))
        .unwrap();
    assert_eq!(before.conn.peer_certificates().unwrap()[0], first_der);
    server.signal("HUP");
    server.said("TLS certificate reloaded");
    let after = client
        .connect("acme.localhost", client.config(&[&rustls::version::TLS13]))
        .unwrap();
    assert_eq!(after.conn.peer_certificates().unwrap()[0], second_der);

    // The key changes and the requests are in the vault's audit log.
    let audit = run(&dir, &["--json", "audit", "show"], "");
    for needle in [
        "apikey_created",
        "apikey_revoked",
        "\"request\"",
        "acme.localhost",
    ] {
        assert!(audit.contains(needle), "{needle} not in the audit log");
    }
    assert!(!audit.contains(&key[16..]));

    let mut server = server;
    server.signal("TERM");
    let mut waited = 0;
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(waited < 600, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
        waited += 1;
    };
    assert!(status.success(), "{status:?}");
    drop(before);
    drop(after);
}

#[test]
fn serve_refuses_clear_http_off_loopback_and_unknown_tenants() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    run(&dir, &["init"], "");
    for (args, needle) in [
        (
            vec![
                "serve",
                "--listen",
                "0.0.0.0:0",
                "--host",
                "a.localhost=default",
                "--insecure-http",
            ],
            "loopback",
        ),
        (
            vec![
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--host",
                "a.localhost=nobody",
                "--insecure-http",
            ],
            "nobody",
        ),
        (
            vec![
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--host",
                "a.localhost=default",
            ],
            "--tls-cert",
        ),
        (
            vec!["apikey", "create", "--tenant", "nobody", "--scope", "read"],
            "nobody",
        ),
        (
            vec![
                "apikey",
                "create",
                "--tenant",
                "default",
                "--scope",
                "everything",
            ],
            "scope",
        ),
    ] {
        let out = credvault_in(&dir).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(out.stdout.is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn serve_takes_its_settings_from_a_toml_file_and_flags_win_over_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    run(&dir, &["init"], "");
    let made = run(
        &dir,
        &[
            "--json", "apikey", "create", "--tenant", "default", "--scope", "read",
        ],
        "",
    );
    let key = serde_json::from_str::<serde_json::Value>(&made).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let ca = Ca::new("config test CA");
    let (cert, private, _) = ca.leaf(&["from-file.localhost", "from-flag.localhost"]);
    std::fs::write(tmp.path().join("cert.pem"), cert).unwrap();
    std::fs::write(tmp.path().join("key.pem"), private).unwrap();
    let config = tmp.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:1\"\ntls_cert = {:?}\ntls_key = {:?}\nkey_rate = \"2/min\"\n\
             [hosts]\n\"from-file.localhost\" = \"default\"\n",
            tmp.path().join("cert.pem"),
            tmp.path().join("key.pem"),
        ),
    )
    .unwrap();
    // The file's listen address (port 1) loses to the flag's; its hosts and TLS files are used.
    let server = Server::start(&dir, &["--config", config.to_str().unwrap()]);
    let client = Client {
        addr: server.addr,
        ca: ca.der.clone(),
    };
    let get = |host| client.send(Req::new(host, "GET", "/api/credentials").key(&key));
    assert_eq!(get("from-file.localhost").status, 200);
    assert_eq!(get("from-flag.localhost").status, 421);
    // The file's key rate (2/min) applies.
    assert_eq!(get("from-file.localhost").status, 200);
    assert_eq!(get("from-file.localhost").status, 429);
    drop(server);

    // Hosts given by flag replace the file's.
    let server = Server::start(
        &dir,
        &[
            "--config",
            config.to_str().unwrap(),
            "--host",
            "from-flag.localhost=default",
        ],
    );
    let client = Client {
        addr: server.addr,
        ca: ca.der.clone(),
    };
    let get = |host| client.send(Req::new(host, "GET", "/api/credentials").key(&key));
    assert_eq!(get("from-flag.localhost").status, 200);
    assert_eq!(get("from-file.localhost").status, 421);

    // A misspelt key is refused, by name.
    std::fs::write(&config, "lisen = \"127.0.0.1:0\"\n").unwrap();
    let out = credvault_in(&dir)
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lisen"), "{err}");
}

#[test]
fn serve_proxies_to_an_upstream_the_config_file_opens_with_its_dlp_policy() {
    const TOKEN: &str = "tok_5c1d8e2a9b7f4036e1d2c3b4a5968778";
    // An upstream on loopback that answers with the Authorization it was sent.
    let (seen_tx, seen_rx) = std::sync::mpsc::channel::<String>();
    let seen_tx = std::sync::Mutex::new(seen_tx);
    let port = credvault_test::https::loopback_http(move |head| {
        let auth = head
            .lines()
            .find_map(|l| l.strip_prefix("authorization: "))
            .unwrap_or("")
            .to_owned();
        let _ = seen_tx.lock().unwrap().send(head.to_owned());
        format!("seen {auth} for TICKET-1234")
    });

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    run(&dir, &["init"], "");
    run(
        &dir,
        &[
            "add",
            "http_bearer_token",
            "local-api",
            "--field",
            &format!("base_url=http://127.0.0.1:{port}/v1"),
        ],
        TOKEN,
    );
    let made = run(
        &dir,
        &[
            "--json", "apikey", "create", "--tenant", "default", "--scope", "proxy",
        ],
        "",
    );
    let key = serde_json::from_str::<serde_json::Value>(&made).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let ca = Ca::new("proxy test CA");
    let (cert, private, _) = ca.leaf(&["acme.localhost"]);
    std::fs::write(tmp.path().join("cert.pem"), cert).unwrap();
    std::fs::write(tmp.path().join("key.pem"), private).unwrap();
    let config = tmp.path().join("serve.toml");
    let base = format!(
        "tls_cert = {:?}\ntls_key = {:?}\nallow_upstream = [\"127.0.0.1/32\"]\n\
         [hosts]\n\"acme.localhost\" = \"default\"\n",
        tmp.path().join("cert.pem"),
        tmp.path().join("key.pem"),
    );
    std::fs::write(
        &config,
        format!(
            "{base}[dlp.default]\ncustom = [{{ name = \"ticket\", pattern = \"TICKET-[0-9]{{4}}\", action = \"redact\" }}]\n"
        ),
    )
    .unwrap();
    let server = Server::start(&dir, &["--config", config.to_str().unwrap()]);
    let client = Client {
        addr: server.addr,
        ca: ca.der.clone(),
    };
    let r = client.send(Req::new("acme.localhost", "GET", "/proxy/local-api/items").key(&key));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let head = seen_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(head.starts_with("GET /v1/items HTTP/1.1"), "{head}");
    assert!(
        head.contains(&format!("authorization: Bearer {TOKEN}")),
        "{head}"
    );
    assert!(!head.contains(&key), "{head}");
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "seen [cv:injected] for [redacted:ticket]"
    );
    drop(server);

    // External sources: the token comes from a variable, never the file; mistakes are named.
    for (source, needle) in [
        (
            "kind = \"vault-kv\"\nurl = \"https://127.0.0.1:1\"\ntoken_env = \"CV_TEST_NO_SUCH_VAR\"\n",
            "CV_TEST_NO_SUCH_VAR",
        ),
        (
            "kind = \"ldap\"\nurl = \"https://127.0.0.1:1\"\ntoken_env = \"PATH\"\n",
            "kind",
        ),
        (
            "kind = \"connect\"\nurl = \"https://127.0.0.1:1\"\ntoken_env = \"PATH\"\n",
            "vault",
        ),
        ("kind = \"vault-kv\"\nurl = \"x\"\ntoken = \"s3cret\"\n", "token"),
    ] {
        std::fs::write(&config, format!("{base}[sources.default]\n{source}")).unwrap();
        let out = credvault_in(&dir)
            .args(["serve", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{source}: {err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    // A policy naming a detector that does not exist is refused, by its place in the file.
    std::fs::write(&config, format!("{base}[dlp.default]\noff = [\"nope\"]\n")).unwrap();
    let out = credvault_in(&dir)
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dlp.default") && err.contains("nope"), "{err}");
}

#[test]
fn gateway_nodes_of_a_vault_in_postgres_share_its_api_keys() {
    let Some(url) = common::service("CREDVAULT_TEST_DATABASE_URL") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (n1, n2) = (tmp.path().join("n1"), tmp.path().join("n2"));
    let schema = format!("gwkeys{}", std::process::id());
    run(
        &n1,
        &["init", "--database", &url, "--database-schema", &schema],
        "",
    );
    run(
        &n1,
        &[
            "add",
            "website_login",
            "stripe-live",
            "--field",
            "login_url=https://x.example/login",
            "--field",
            "username=bot",
        ],
        "shared by both nodes\n",
    );
    // A key made on node 1, before node 2 exists: it lives in the database, not in a file.
    let made = run(
        &n1,
        &[
            "--json",
            "apikey",
            "create",
            "--tenant",
            "default",
            "--scope",
            "read,reveal",
        ],
        "",
    );
    let made: serde_json::Value = serde_json::from_str(&made).unwrap();
    let (key, id) = (
        made["key"].as_str().unwrap().to_owned(),
        made["id"].as_str().unwrap().to_owned(),
    );
    assert!(
        !n1.join("gateway.db").exists(),
        "no key file beside a PostgreSQL vault"
    );
    common::copy_node(&n1, &n2);
    assert!(run(&n2, &["apikey", "list"], "").contains(&id));

    let ca = Ca::new("pg nodes CA");
    let (cert, private, _) = ca.leaf(&["acme.localhost"]);
    let (cert_path, key_path) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, private).unwrap();
    let args = [
        "--host",
        "acme.localhost=default",
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ];
    let servers = [Server::start(&n1, &args), Server::start(&n2, &args)];
    let clients: Vec<Client> = servers
        .iter()
        .map(|s| Client {
            addr: s.addr,
            ca: ca.der.clone(),
        })
        .collect();
    for c in &clients {
        let r = c.send(Req::new("acme.localhost", "GET", "/api/credentials").key(&key));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["credentials"][0]["name"], "stripe-live");
    }
    // Revoked through node 2's CLI: both nodes refuse it on the next request.
    run(&n2, &["apikey", "revoke", &id], "");
    for c in &clients {
        let r = c.send(Req::new("acme.localhost", "GET", "/api/credentials").key(&key));
        assert_eq!(r.status, 401);
    }
    assert!(run(&n1, &["apikey", "list"], "").contains("REVOKED"));
    // Node 1 used the key: its last use is in the shared record.
    let listed = run(&n1, &["--json", "apikey", "list"], "");
    assert!(listed.contains("last_used_at\":1"), "{listed}");
}
