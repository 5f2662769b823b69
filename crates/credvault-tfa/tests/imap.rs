//! Polling a real IMAP server (Dovecot on loopback, started by `.ci/tester-services`): unread
//! 2FA mail is matched by its receiving address, its code stored, every message marked read;
//! IMAPS with the server's certificate trusted; clear text refused off loopback. Without
//! `CREDVAULT_TEST_IMAP` the test passes vacuously on a developer machine and fails when `CI`
//! is set.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use credvault_store::{NewCredential, TenantId, Vault, VaultOptions};
use credvault_tfa::{ImapTrust, Rules, Tfa, TfaError};

fn server() -> Option<(String, String, String, String)> {
    let vars = [
        "CREDVAULT_TEST_IMAP",
        "CREDVAULT_TEST_IMAPS",
        "CREDVAULT_TEST_IMAP_CA",
        "CREDVAULT_TEST_TESTER_PASSWORD",
    ];
    let got: Vec<Option<String>> = vars.iter().map(|v| std::env::var(v).ok()).collect();
    if got.iter().any(Option::is_none) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but {vars:?} are not: .ci/tester-services starts Dovecot"
        );
        eprintln!("skipped: no IMAP server (source .ci/tester-services)");
        return None;
    }
    let mut it = got.into_iter().map(Option::unwrap);
    Some((it.next()?, it.next()?, it.next()?, it.next()?))
}

/// Puts a message into the test user's INBOX (IMAP APPEND), unread.
fn append(addr: &str, password: &str, msg: &str) {
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    let mut client = imap::Client::new(tcp);
    client.read_greeting().unwrap();
    let mut s = client
        .login("credvault", password)
        .map_err(|(e, _)| e)
        .unwrap();
    s.append("INBOX", msg.as_bytes()).finish().unwrap();
    s.logout().unwrap();
}

#[test]
fn unread_mail_in_a_polled_mailbox_yields_its_code_and_is_marked_read() {
    let Some((plain, tls, ca, password)) = server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::open_or_init(dir.path(), VaultOptions::default()).unwrap();
    let store = vault.store().clone();
    let acme = TenantId::new("acme").unwrap();
    store.create_tenant(&acme, "Acme", "admin").unwrap();
    let scope = store.tenant(&acme, "robot").unwrap();
    let portal = scope
        .create(NewCredential::new(
            "website_login",
            "portal",
            serde_json::json!({"login_url": "https://portal.example.com", "username": "robot", "password": "pw"}),
        ))
        .unwrap()
        .id;
    let mailbox = |name: &str, addr: &str, security: &str| {
        let (host, port) = addr.rsplit_once(':').unwrap();
        scope
            .create(NewCredential::new(
                "imap_mailbox",
                name,
                serde_json::json!({"host": host, "port": port.parse::<u16>().unwrap(),
                    "security": security, "user": "credvault", "password": password}),
            ))
            .unwrap()
            .id
    };
    let clear = mailbox("inbox-clear", &plain, "none");
    let secure = mailbox("inbox-tls", &tls, "tls");
    let tfa = Tfa::open_in(dir.path(), store.clone()).unwrap();
    let address = tfa.address(&scope, &portal, "mail.example.net").unwrap();
    tfa.set_rules(
        &scope,
        &portal,
        &Rules::default().from("@portal.example.com"),
    )
    .unwrap();
    let trust = ImapTrust::default();
    // Whatever an earlier run left is read first.
    tfa.poll_imap(&scope, &clear, &trust).unwrap();

    let since = store.now();
    append(&plain, &password, &format!(
        "Delivered-To: {address}\r\nFrom: Portal <no-reply@portal.example.com>\r\nTo: robot@example.net\r\n\
         Subject: Your sign-in code\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Your verification code is 917230. Order 44419921 shipped.\r\n"));
    append(&plain, &password, "From: news@shop.example\r\nTo: robot@example.net\r\nSubject: Deals\r\n\r\nSave 40% with code 123456\r\n");
    append(&plain, &password, &format!(
        "From: someone@evil.example\r\nTo: {address}\r\nSubject: Your code\r\n\r\nYour code is 555000\r\n"));
    let report = tfa.poll_imap(&scope, &clear, &trust).unwrap();
    assert_eq!(
        (report.messages, report.stored, report.ignored),
        (3, 1, 2),
        "{report:?}"
    );
    let code = tfa
        .wait_for_code(&scope, &portal, since, Duration::from_secs(1))
        .unwrap();
    assert_eq!(code.expose_secret(), "917230");
    assert!(matches!(
        tfa.wait_for_code(&scope, &portal, since, Duration::ZERO),
        Err(TfaError::Timeout { .. })
    ));
    // Everything was marked read: the next poll finds nothing.
    assert_eq!(tfa.poll_imap(&scope, &clear, &trust).unwrap().messages, 0);

    // IMAPS: refused until the server's certificate is trusted.
    append(&plain, &password, &format!(
        "Delivered-To: {address}\r\nFrom: no-reply@portal.example.com\r\nSubject: Login code\r\n\r\nLogin code: 640288\r\n"));
    assert!(matches!(
        tfa.poll_imap(&scope, &secure, &trust),
        Err(TfaError::Receiver(_))
    ));
    let trusted = ImapTrust::default()
        .with_pem(&std::fs::read(&ca).unwrap())
        .unwrap();
    let report = tfa.poll_imap(&scope, &secure, &trusted).unwrap();
    assert_eq!((report.messages, report.stored), (1, 1));
    assert_eq!(
        tfa.wait_for_code(&scope, &portal, since, Duration::from_secs(1))
            .unwrap()
            .expose_secret(),
        "640288"
    );

    // Clear text to an address that is not loopback is refused before connecting.
    let far = scope
        .create(NewCredential::new(
            "imap_mailbox",
            "inbox-far",
            serde_json::json!({"host": "192.0.2.1", "port": 143, "security": "none",
                "user": "credvault", "password": "x"}),
        ))
        .unwrap()
        .id;
    assert!(matches!(
        tfa.poll_imap(&scope, &far, &trust),
        Err(TfaError::Invalid { .. })
    ));
    // Not a mailbox.
    assert!(matches!(
        tfa.poll_imap(&scope, &portal, &trust),
        Err(TfaError::Invalid { .. })
    ));
    // The mailbox password was read for the polls, and recorded as such.
    store.flush().unwrap();
    let events = vault
        .audit_events(
            &credvault_store::audit::Query::new().action(credvault_store::audit::Action::Accessed),
        )
        .unwrap();
    assert!(events.events.iter().any(|e| matches!(&e.event.details,
        Some(credvault_store::audit::Details::Accessed { service: Some(s), .. }) if s == "tfa-imap")));
}
