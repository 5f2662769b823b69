//! Email and SMS codes against a real vault on disk: Python's `smtplib` sends realistic 2FA
//! mail to the SMTP receiver (in the clear on loopback, and with STARTTLS); the code is found
//! among decoy numbers, handed out once, kept no longer than its retention, never logged.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use credvault_store::audit::{read_event_files, segment_paths, Query};
use credvault_store::{
    CredentialId, CredentialUpdate, ManualClock, NewCredential, Store, StoreConfig, TenantId,
    Vault, VaultOptions,
};
use credvault_tfa::{
    twilio_signature, verify_twilio_signature, Outcome, Rules, SmtpReceiver, Tfa, TfaError,
};

const T0: i64 = 1_800_000_000_000;

struct Env {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    _vault: Vault,
    store: Store,
    tenant: TenantId,
    portal: CredentialId,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let vault = Vault::open_or_init(
        dir.path(),
        VaultOptions::default().store(StoreConfig::default().clock(clock.clone())),
    )
    .unwrap();
    let store = vault.store().clone();
    let tenant = TenantId::new("acme").unwrap();
    store.create_tenant(&tenant, "Acme", "admin").unwrap();
    let portal = store
        .tenant(&tenant, "robot")
        .unwrap()
        .create(NewCredential::new(
            "website_login",
            "portal",
            serde_json::json!({"login_url": "https://portal.example.com/login",
                "username": "robot", "password": "pw"}),
        ))
        .unwrap()
        .id;
    Env {
        dir,
        clock,
        _vault: vault,
        store,
        tenant,
        portal,
    }
}

impl Env {
    fn tfa(&self) -> Tfa {
        Tfa::open_in(self.dir.path(), self.store.clone())
            .unwrap()
            .poll_interval(Duration::from_millis(10))
    }

    fn audit_text(&self) -> String {
        segment_paths(&Vault::audit_dir(self.dir.path()))
            .unwrap()
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    fn count(&self, action: &str) -> usize {
        let segs = segment_paths(&Vault::audit_dir(self.dir.path())).unwrap();
        read_event_files(&segs, &Query::new())
            .unwrap()
            .events
            .iter()
            .filter(|e| e.event.action.as_str() == action)
            .count()
    }
}

const BODY: &str = "Hi robot,\n\nSomeone (hopefully you) is signing in from Chrome on Linux, IP 203.0.113.54.\nYour verification code is 730418. It expires in 10 minutes.\n\nOrder #88812345 update: shipped on 2026-12-01.\nQuestions? Call +1 415 555 0100.\n";

/// Sends one 2FA email with Python's smtplib (multipart: text and HTML, as sites send them).
fn send_with_python(
    addr: std::net::SocketAddr,
    to: &str,
    starttls_ca: Option<&std::path::Path>,
) -> bool {
    let python = std::env::var("CREDVAULT_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = r#"
import smtplib, ssl, sys
from email.message import EmailMessage
host, port, to, body, cafile = sys.argv[1:6]
msg = EmailMessage()
msg['From'] = 'Portal Security <no-reply@portal.example.com>'
msg['To'] = to
msg['Subject'] = 'Your Portal sign-in code'
msg.set_content(body)
msg.add_alternative('<html><body><p>Your verification code is <b>730418</b>.</p><p>Order #88812345</p></body></html>', subtype='html')
with smtplib.SMTP(host, int(port), timeout=10) as s:
    if cafile:
        s.starttls(context=ssl.create_default_context(cafile=cafile))
    s.send_message(msg)
"#;
    let out = std::process::Command::new(&python)
        .args([
            "-c",
            script,
            &addr.ip().to_string(),
            &addr.port().to_string(),
            to,
            BODY,
            &starttls_ca
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        ])
        .output();
    match out {
        Ok(o) => {
            assert!(
                o.status.success(),
                "smtplib: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            true
        }
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but {python} cannot run: {e}"
            );
            eprintln!("skipped: {python} not found");
            false
        }
    }
}

#[test]
fn an_email_through_the_smtp_receiver_yields_its_code_once_and_no_decoy() {
    let e = env();
    let tfa = Arc::new(e.tfa());
    let scope = e.store.tenant(&e.tenant, "robot").unwrap();
    let address = tfa.address(&scope, &e.portal, "mail.example.net").unwrap();
    assert!(address.starts_with("vault+") && address.ends_with("@mail.example.net"));
    // The same address every time.
    assert_eq!(
        tfa.address(&scope, &e.portal, "mail.example.net").unwrap(),
        address
    );
    tfa.set_rules(
        &scope,
        &e.portal,
        &Rules::default()
            .from("@portal.example.com")
            .subject("sign-in code"),
    )
    .unwrap();
    let rx = SmtpReceiver::bind("127.0.0.1:0".parse().unwrap(), None, tfa.clone()).unwrap();
    let addr = rx.local_addr().unwrap();
    rx.spawn().unwrap();
    if !send_with_python(addr, &address, None) {
        return;
    }
    let code = tfa
        .wait_for_code(&scope, &e.portal, T0, Duration::from_secs(10))
        .unwrap();
    assert_eq!(code.expose_secret(), "730418");
    assert!(!format!("{code:?}").contains("730418"));
    assert!(matches!(
        tfa.wait_for_code(&scope, &e.portal, T0, Duration::from_millis(50)),
        Err(TfaError::Timeout { .. })
    ));
    assert_eq!(e.count("tfa_code_received"), 1);
    assert_eq!(e.count("tfa_code_delivered"), 1);
    // Neither the code nor the message reached the log or the database files.
    let log = e.audit_text();
    for needle in ["730418", "88812345", "hopefully"] {
        assert!(!log.contains(needle), "{needle} in the audit log");
        for f in ["tfa.db", "tfa.db-wal"] {
            if let Ok(bytes) = std::fs::read(e.dir.path().join(f)) {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{needle} in {f}"
                );
            }
        }
    }
    // An unknown address is refused at RCPT by the receiver; the wrong sender is ignored.
    let mut s = TcpStream::connect(addr).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    let mut say = |cmd: &str, r: &mut BufReader<TcpStream>, line: &mut String| {
        s.write_all(cmd.as_bytes()).unwrap();
        loop {
            line.clear();
            r.read_line(line).unwrap();
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
        line.clone()
    };
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("220"));
    assert!(say("EHLO test\r\n", &mut r, &mut line).starts_with("250"));
    assert!(say("MAIL FROM:<x@evil.example>\r\n", &mut r, &mut line).starts_with("250"));
    assert!(say(
        "RCPT TO:<postmaster@mail.example.net>\r\n",
        &mut r,
        &mut line
    )
    .starts_with("550"));
    assert!(say(&format!("RCPT TO:<{address}>\r\n"), &mut r, &mut line).starts_with("250"));
    assert!(say("DATA\r\n", &mut r, &mut line).starts_with("354"));
    let reply = say(
        "From: x@evil.example\r\nSubject: Your sign-in code\r\n\r\nYour code is 111222\r\n.\r\n",
        &mut r,
        &mut line,
    );
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(e.count("tfa_message_ignored"), 1);
    assert!(tfa
        .wait_for_code(&scope, &e.portal, T0, Duration::from_millis(50))
        .is_err());
    // A line past the limit closes the connection.
    let long = format!("NOOP {}\r\n", "a".repeat(credvault_tfa::MAX_LINE_LEN));
    let _ = s.write_all(long.as_bytes());
    line.clear();
    assert_eq!(r.read_line(&mut line).unwrap_or(0), 0, "{line}");
}

#[test]
fn starttls_is_offered_and_required_off_loopback() {
    let e = env();
    let tfa = Arc::new(e.tfa());
    let scope = e.store.tenant(&e.tenant, "robot").unwrap();
    let address = tfa.address(&scope, &e.portal, "mail.example.net").unwrap();
    // Without a certificate, only a loopback address.
    assert!(matches!(
        SmtpReceiver::bind("0.0.0.0:0".parse().unwrap(), None, tfa.clone()),
        Err(TfaError::Receiver(_))
    ));
    let ca = credvault_test::https::Ca::new("smtp test CA");
    let (cert, key, _) = ca.leaf(&["localhost", "127.0.0.1"]);
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let rx = SmtpReceiver::bind(
        "127.0.0.1:0".parse().unwrap(),
        Some(Arc::new(cfg)),
        tfa.clone(),
    )
    .unwrap();
    let addr = rx.local_addr().unwrap();
    rx.spawn().unwrap();
    // MAIL before STARTTLS is refused.
    let mut s = TcpStream::connect(addr).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    s.write_all(b"EHLO test\r\n").unwrap();
    let mut offered = false;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        offered |= line.contains("STARTTLS");
        if line.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    }
    assert!(offered, "STARTTLS not offered");
    s.write_all(b"MAIL FROM:<a@b.example>\r\n").unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("530"), "{line}");
    drop(s);
    let ca_file = e.dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    if !send_with_python(addr, &address, Some(&ca_file)) {
        return;
    }
    let code = tfa
        .wait_for_code(&scope, &e.portal, T0, Duration::from_secs(10))
        .unwrap();
    assert_eq!(code.expose_secret(), "730418");
}

#[test]
fn a_code_is_kept_only_for_its_retention_and_a_changed_record_is_refused() {
    let e = env();
    let tfa = e.tfa().retention(Duration::from_secs(60));
    let scope = e.store.tenant(&e.tenant, "robot").unwrap();
    let address = tfa.address(&scope, &e.portal, "example.net").unwrap();
    let mail = |code: &str| {
        format!(
            "From: a@portal.example.com\r\nSubject: Login code\r\n\r\nYour login code: {code}\r\n"
        )
    };
    tfa.receive_email(mail("123456").as_bytes(), std::slice::from_ref(&address))
        .unwrap();
    e.clock.advance(60_000);
    assert!(matches!(
        tfa.wait_for_code(&scope, &e.portal, T0, Duration::ZERO),
        Err(TfaError::Timeout { .. })
    ));
    assert_eq!(tfa.sweep().unwrap(), 1);
    // A code received before `since` is not handed out.
    tfa.receive_email(mail("234567").as_bytes(), std::slice::from_ref(&address))
        .unwrap();
    let later = e.store.now() + 1;
    assert!(tfa
        .wait_for_code(&scope, &e.portal, later, Duration::ZERO)
        .is_err());
    // A record moved to another credential does not authenticate.
    let other = scope
        .create(NewCredential::new(
            "website_login",
            "other",
            serde_json::json!({"login_url": "https://o.example.com", "username": "u", "password": "p"}),
        ))
        .unwrap()
        .id;
    rusqlite::Connection::open(e.dir.path().join("tfa.db"))
        .unwrap()
        .execute("UPDATE tfa_codes SET credential = ?1", [other.as_str()])
        .unwrap();
    assert!(matches!(
        tfa.wait_for_code(&scope, &other, T0, Duration::ZERO),
        Err(TfaError::Integrity { record: "code" })
    ));
    // A deactivated credential gets no code and hands none out.
    scope
        .update(&e.portal, CredentialUpdate::default().active(false))
        .unwrap();
    assert!(tfa
        .receive_email(mail("345678").as_bytes(), &[address])
        .is_err());
    assert!(matches!(
        tfa.wait_for_code(&scope, &e.portal, T0, Duration::ZERO),
        Err(TfaError::Store(_))
    ));
}

#[test]
fn twilio_signatures_match_twilios_own_example_and_sms_reach_their_number() {
    // Twilio's documented example (docs "Webhooks security", api-snippets
    // security/signature_validation): auth token 12345.
    let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
    let params: Vec<(String, String)> = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675310"),
        ("Digits", "1234"),
        ("From", "+14158675310"),
        ("To", "+18005551212"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(
        twilio_signature(b"12345", url, &params),
        "GvWf1cFY/Q7PnoempGyD5oXAezc="
    );
    assert!(verify_twilio_signature(
        b"12345",
        url,
        &params,
        "GvWf1cFY/Q7PnoempGyD5oXAezc="
    ));
    assert!(!verify_twilio_signature(
        b"12346",
        url,
        &params,
        "GvWf1cFY/Q7PnoempGyD5oXAezc="
    ));
    let mut changed = params.clone();
    changed[2].1 = "1235".into();
    assert!(!verify_twilio_signature(
        b"12345",
        url,
        &changed,
        "GvWf1cFY/Q7PnoempGyD5oXAezc="
    ));
    assert!(!verify_twilio_signature(
        b"12345",
        url,
        &params,
        "not base64!"
    ));

    let e = env();
    let tfa = e.tfa();
    let scope = e.store.tenant(&e.tenant, "robot").unwrap();
    assert!(tfa
        .set_rules(&scope, &e.portal, &Rules::default().phone("5551234"))
        .is_err());
    tfa.set_rules(
        &scope,
        &e.portal,
        &Rules::default().phone("+15557654321").from("+18005550199"),
    )
    .unwrap();
    let sms = "Portal: 552019 is your verification code. Don't share it. Ref 99120033";
    // Another number, another sender: not taken.
    assert_eq!(
        tfa.receive_sms(None, "+15550000000", "+18005550199", sms)
            .unwrap(),
        Outcome::NoRoute
    );
    assert!(matches!(
        tfa.receive_sms(None, "+15557654321", "+18005550000", sms)
            .unwrap(),
        Outcome::Ignored {
            reason: "sender not allowed",
            ..
        }
    ));
    // Another tenant's gateway does not reach this tenant's number.
    assert_eq!(
        tfa.receive_sms(
            Some(&TenantId::new("globex").unwrap()),
            "+15557654321",
            "+18005550199",
            sms
        )
        .unwrap(),
        Outcome::NoRoute
    );
    assert!(matches!(
        tfa.receive_sms(Some(&e.tenant), "+15557654321", "+18005550199", sms)
            .unwrap(),
        Outcome::Stored { .. }
    ));
    let code = tfa
        .wait_for_code(&scope, &e.portal, T0, Duration::ZERO)
        .unwrap();
    assert_eq!(code.expose_secret(), "552019");
    assert_eq!(code.channel, credvault_tfa::Channel::Sms);
}
