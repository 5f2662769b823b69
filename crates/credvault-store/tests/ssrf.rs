//! The credential tester against server-side request forgery: URL forms that make a checker
//! and a client disagree about the host (user info, backslashes, fragments), IPs written in
//! decimal, octal, hex or inside IPv6, IDNA look-alikes, and DNS names that resolve to
//! loopback, private or metadata addresses (through a test resolver). The tester must refuse
//! each one before connecting, and connect only to the addresses it checked.
#![cfg(feature = "http-tester")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use credvault_store::audit::{Action, Details, MemorySink, TestStatus};
use credvault_store::net::{AddressClass, Destination, NetworkPolicy, Refused, Resolve};
use credvault_store::{
    AuditTarget, CredentialTester, HttpTester, LocalKeyring, MemoryStorage, NewCredential,
    Registry, Store, TenantId, TesterRegistry,
};
use credvault_test::http::Listener;
use serde_json::json;

/// A resolver with fixed answers that records every name it was asked.
struct TestDns {
    answers: HashMap<&'static str, Vec<IpAddr>>,
    asked: Mutex<Vec<String>>,
}

impl TestDns {
    fn new() -> Arc<Self> {
        let ips = |list: &[&str]| list.iter().map(|s| s.parse().unwrap()).collect();
        let answers = HashMap::from([
            ("localhost", ips(&["127.0.0.1"])),
            ("loopback.test", ips(&["127.0.0.1"])),
            ("svc.test", ips(&["127.0.0.1"])),
            ("v6loop.test", ips(&["::1"])),
            ("mapped.test", ips(&["::ffff:127.0.0.1"])),
            ("metadata.test", ips(&["169.254.169.254"])),
            ("intranet.test", ips(&["10.1.2.3"])),
            ("mixed.test", ips(&["8.8.8.8", "10.0.0.1"])),
            ("mixed-loop.test", ips(&["127.0.0.1", "10.0.0.1"])),
            ("public.test", ips(&["8.8.8.8"])),
            ("empty.test", ips(&[])),
        ]);
        Arc::new(Self {
            answers,
            asked: Mutex::new(Vec::new()),
        })
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl Resolve for TestDns {
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        self.asked.lock().unwrap().push(host.to_owned());
        self.answers
            .get(host)
            .map(|ips| ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such name"))
    }
}

/// What a URL should give: refused for this reason, or accepted with these addresses (and
/// the name the resolver was asked, if any).
#[derive(Debug)]
enum Want {
    Refused(Refused),
    To(&'static str, Option<&'static str>),
}

use AddressClass::{LinkLocal, Loopback, Private, Reserved};
use Want::{Refused as No, To};

fn addr(c: AddressClass) -> Want {
    No(Refused::Address(c))
}

/// At least 30 URL forms against the default policy (public addresses only). `{P}` is the
/// port of a live local listener.
fn default_table() -> Vec<(&'static str, Want)> {
    vec![
        ("http://127.0.0.1:{P}/", addr(Loopback)),
        ("http://localhost:{P}/", addr(Loopback)),
        ("http://LOCALHOST:{P}/", addr(Loopback)),
        ("http://[::1]:{P}/", addr(Loopback)),
        // Decimal, hex, octal, short and trailing-dot IPv4, and a percent-encoded host.
        ("http://2130706433:{P}/", addr(Loopback)),
        ("http://0x7f000001:{P}/", addr(Loopback)),
        ("http://0177.0.0.1:{P}/", addr(Loopback)),
        ("http://127.1:{P}/", addr(Loopback)),
        ("http://127.0.0.1.:{P}/", addr(Loopback)),
        ("http://%31%32%37.0.0.1:{P}/", addr(Loopback)),
        // The unspecified address reaches the local host on Linux.
        ("http://0.0.0.0:{P}/", addr(Reserved)),
        ("http://0:{P}/", addr(Reserved)),
        ("http://[::]:{P}/", addr(Reserved)),
        // IPv4 inside IPv6.
        ("http://[::ffff:127.0.0.1]:{P}/", addr(Loopback)),
        ("http://[::ffff:7f00:1]:{P}/", addr(Loopback)),
        ("https://[64:ff9b::7f00:1]/", addr(Loopback)),
        ("https://[2002:a9fe:a9fe::]/", addr(LinkLocal)),
        // Metadata, link-local, private, carrier-grade NAT, unique local.
        ("https://169.254.169.254/latest/meta-data/", addr(LinkLocal)),
        ("https://[fe80::1]/", addr(LinkLocal)),
        ("https://[fe80::1%25eth0]/", No(Refused::Unparsable)),
        ("https://10.0.0.1/", addr(Private)),
        ("https://172.16.0.1/", addr(Private)),
        ("https://192.168.1.1/", addr(Private)),
        ("https://100.64.0.1/", addr(Private)),
        ("https://[fd12:3456::1]/", addr(Private)),
        // User info, and what a naive splitter would call the host.
        ("http://u:p@127.0.0.1:{P}/", No(Refused::UserInfo)),
        ("https://public.test@127.0.0.1/", No(Refused::UserInfo)),
        ("https://public.test:443@127.0.0.1/", No(Refused::UserInfo)),
        // A backslash ends the authority in special schemes: the host is the part before it.
        (r"http://192.0.2.2:18082\@127.0.0.1/v1", addr(Reserved)),
        (
            r"https://public.test:443\@127.0.0.1/v1",
            To("8.8.8.8:443", Some("public.test")),
        ),
        (r"https://127.0.0.1\@public.test/", addr(Loopback)),
        ("http://127.0.0.1:{P}#@public.test/", addr(Loopback)),
        (
            "https://public.test?@127.0.0.1/",
            To("8.8.8.8:443", Some("public.test")),
        ),
        (r"http:/\127.0.0.1:{P}/", addr(Loopback)),
        (" http://127.0.0.1:{P}/", addr(Loopback)),
        ("HTTP://127.0.0.1:{P}/", addr(Loopback)),
        ("http://127.0.0.1\t:{P}/", addr(Loopback)),
        // DNS names resolving where they must not.
        ("https://loopback.test/", addr(Loopback)),
        ("https://v6loop.test/", addr(Loopback)),
        ("https://mapped.test/", addr(Loopback)),
        ("https://metadata.test/", addr(LinkLocal)),
        ("https://intranet.test/", addr(Private)),
        // One bad address among good ones refuses the URL.
        ("https://mixed.test/", addr(Private)),
        // IDNA: full-width and circled letters map to ASCII before the lookup.
        ("https://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ/", addr(Loopback)),
        ("https://ｌｏｃａｌｈｏｓｔ/", addr(Loopback)),
        ("https://nowhere.test/", No(Refused::Unresolved)),
        ("https://empty.test/", No(Refused::Unresolved)),
        // Other schemes and non-URLs.
        ("file:///etc/passwd", No(Refused::Scheme)),
        ("gopher://127.0.0.1:{P}/", No(Refused::Scheme)),
        ("ftp://127.0.0.1/", No(Refused::Scheme)),
        ("not a url", No(Refused::Unparsable)),
        ("//127.0.0.1/", No(Refused::Unparsable)),
        // Reserved ranges.
        ("https://[2001:db8::1]/", addr(Reserved)),
        ("https://224.0.0.1/", addr(Reserved)),
        ("https://255.255.255.255/", addr(Reserved)),
        // Plain http leaves the host only for loopback.
        ("http://public.test/", No(Refused::PlainHttp)),
        // And what is allowed.
        (
            "https://public.test/",
            To("8.8.8.8:443", Some("public.test")),
        ),
        ("https://8.8.8.8:8443/x", To("8.8.8.8:8443", None)),
        (
            "https://[2606:4700::1111]/",
            To("[2606:4700::1111]:443", None),
        ),
    ]
}

fn check_table(table: Vec<(&'static str, Want)>, policy: NetworkPolicy, port: u16) {
    assert!(table.len() >= 30);
    for (raw, want) in table {
        let url = raw.replace("{P}", &port.to_string());
        let dns = TestDns::new();
        let got = Destination::check(&url, &policy, &*dns);
        match (&want, &got) {
            (Want::Refused(w), Err(g)) => assert_eq!(w, g, "{url}"),
            (Want::To(addr, asked), Ok(d)) => {
                assert_eq!(d.addrs(), &[addr.parse::<SocketAddr>().unwrap()], "{url}");
                let asked: Vec<String> = asked.iter().map(|s| s.to_string()).collect();
                assert_eq!(dns.asked(), asked, "{url}");
            }
            _ => panic!("{url}: wanted {want:?}, got {got:?}"),
        }
        // An IP literal is never sent to the resolver; a name is asked at most once.
        assert!(dns.asked().len() <= 1, "{url}: {:?}", dns.asked());
    }
}

#[test]
fn url_forms_are_refused_by_the_default_policy() {
    check_table(default_table(), NetworkPolicy::public_only(), 18082);
    // The look-alike names are asked as their ASCII form.
    let dns = TestDns::new();
    let _ = Destination::check("https://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ/", &NetworkPolicy::public_only(), &*dns);
    assert_eq!(dns.asked(), ["localhost"]);
    // A Greek omicron is not an "o": another name, which does not resolve here.
    let dns = TestDns::new();
    let got = Destination::check("https://lοcalhost/", &NetworkPolicy::public_only(), &*dns);
    assert_eq!(got.unwrap_err(), Refused::Unresolved);
    assert!(dns.asked()[0].starts_with("xn--"), "{:?}", dns.asked());
}

#[test]
fn allowing_loopback_allows_only_loopback() {
    let policy = NetworkPolicy::public_only().allow(Loopback);
    let table = vec![
        ("http://127.0.0.1:{P}/", To("127.0.0.1:{P}", None)),
        ("http://2130706433:{P}/", To("127.0.0.1:{P}", None)),
        ("http://[::1]:{P}/", To("[::1]:{P}", None)),
        (
            "http://loopback.test:{P}/",
            To("127.0.0.1:{P}", Some("loopback.test")),
        ),
        (
            "http://mapped.test:{P}/",
            To("[::ffff:127.0.0.1]:{P}", Some("mapped.test")),
        ),
        ("http://0.0.0.0:{P}/", addr(Reserved)),
        ("http://mixed-loop.test:{P}/", addr(Private)),
        (r"http://10.0.0.1:{P}\@svc.test/", addr(Private)),
        ("https://169.254.169.254/", addr(LinkLocal)),
        ("http://public.test/", No(Refused::PlainHttp)),
    ];
    for (raw, want) in table {
        let url = raw.replace("{P}", "9");
        let dns = TestDns::new();
        let got = Destination::check(&url, &policy, &*dns);
        match (want, got) {
            (Want::Refused(w), Err(g)) => assert_eq!(w, g, "{url}"),
            (Want::To(a, _), Ok(d)) => {
                assert_eq!(
                    d.addrs(),
                    &[a.replace("{P}", "9").parse().unwrap()],
                    "{url}"
                )
            }
            (w, g) => panic!("{url}: wanted {w:?}, got {g:?}"),
        }
    }
    let https_only = policy.https_only();
    assert_eq!(
        Destination::check("http://127.0.0.1:9/", &https_only, &*TestDns::new()).unwrap_err(),
        Refused::PlainHttp
    );
}

/// A store with a `probe` type whose test URL is its public `url` field.
fn probe_store(testers: TesterRegistry) -> (Store, Arc<MemorySink>, TenantId) {
    let mut r = Registry::with_builtins();
    r.add_json(
        r#"{"name": "probe", "display_name": "Probe", "category": "api",
            "fields": [{"key": "url", "label": "URL", "kind": "string", "required": true},
                       {"key": "token", "label": "Token", "kind": "password", "required": true}],
            "authenticate": {"headers": {"Authorization": "Bearer {{token}}"}},
            "test": {"kind": "http", "request": {"url": "{{url}}"}}}"#,
    )
    .unwrap();
    let audit = Arc::new(MemorySink::new());
    let store = Store::new(
        Arc::new(MemoryStorage::new()),
        Arc::new(LocalKeyring::generate().unwrap()),
        AuditTarget::Sink(audit.clone()),
    )
    .with_registry(Arc::new(r))
    .with_testers(testers);
    let t = TenantId::new("acme").unwrap();
    store.create_tenant(&t, "Acme", "admin").unwrap();
    (store, audit, t)
}

fn testers(tester: HttpTester) -> TesterRegistry {
    let mut r = TesterRegistry::empty();
    r.register(
        credvault_store::schema::TestKind::Http,
        Arc::new(tester) as Arc<dyn CredentialTester>,
    );
    r
}

#[test]
fn the_tester_refuses_before_connecting_and_audits_why() {
    let listener = Listener::start();
    let dns = TestDns::new();
    let tester = HttpTester::new().with_resolver(dns.clone());
    let (store, audit, t) = probe_store(testers(tester));
    let s = store.tenant(&t, "alice").unwrap();
    let mut n = 0;
    for (raw, want) in default_table() {
        // Only the forms that would reach the local listener if the check were wrong.
        if !raw.contains("{P}") {
            continue;
        }
        n += 1;
        let url = raw.replace("{P}", &listener.port().to_string());
        let name = format!("p{n}");
        let info = s
            .create(NewCredential::new(
                "probe",
                name,
                json!({"url": url, "token": "tok-SECRET-77"}),
            ))
            .unwrap();
        let out = s.test(&info.id).unwrap();
        assert_eq!(out.status, TestStatus::Error, "{url}: {out:?}");
        let Want::Refused(why) = want else {
            panic!("{url}: the table allows it")
        };
        assert_eq!(out.message, format!("refused: {why}"), "{url}");
        let ev = audit.events().pop().unwrap();
        assert_eq!(ev.action, Action::Tested);
        assert!(
            matches!(&ev.details, Some(Details::Tested { message, .. }) if message == &out.message),
            "{url}: {ev:?}"
        );
    }
    assert!(n >= 20, "{n} forms aimed at the listener");
    assert_eq!(listener.hits(), 0, "{:?}", listener.requests());
    let text = serde_json::to_string(&audit.events()).unwrap();
    assert!(!text.contains("tok-SECRET"));
}

#[test]
fn the_tester_connects_only_to_the_addresses_it_checked() {
    let listener = Listener::start();
    let dns = TestDns::new();
    let tester = HttpTester::new().allow(Loopback).with_resolver(dns.clone());
    let (store, _, t) = probe_store(testers(tester));
    let s = store.tenant(&t, "alice").unwrap();
    let port = listener.port();
    // `svc.test` exists only in the test resolver: the request reaching the listener proves
    // the client used the checked answer and made no lookup of its own.
    for (i, url) in [
        format!("http://svc.test:{port}/me"),
        format!(r"http://svc.test:{port}\@10.0.0.1/"),
    ]
    .into_iter()
    .enumerate()
    {
        let info = s
            .create(NewCredential::new(
                "probe",
                format!("svc{i}"),
                json!({"url": url, "token": "tok-SECRET-78"}),
            ))
            .unwrap();
        let out = s.test(&info.id).unwrap();
        assert_eq!(out.status, TestStatus::Ok, "{url}: {out:?}");
        assert_eq!(listener.hits(), i + 1);
        let head = listener.requests().pop().unwrap();
        assert!(head.contains("Bearer tok-SECRET-78"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("host: svc.test:{port}")),
            "{head}"
        );
    }
    assert_eq!(dns.asked(), ["svc.test", "svc.test"]);
    // Private is still refused when only loopback is allowed.
    let info = s
        .create(NewCredential::new(
            "probe",
            "lan",
            json!({"url": format!("http://mixed-loop.test:{port}/"), "token": "t"}),
        ))
        .unwrap();
    let out = s.test(&info.id).unwrap();
    assert_eq!(
        out.message,
        "refused: the host is a private address, which this vault does not connect to"
    );
    assert_eq!(listener.hits(), 2);
}
