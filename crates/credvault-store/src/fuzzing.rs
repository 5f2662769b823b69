//! Entry points for the fuzz targets (not a public API).

use std::sync::{Arc, OnceLock};

use credvault_audit::MemorySink;
use credvault_envelope::LocalKeyring;

use crate::{
    decode_secret_fields, encode_secret_fields, AuditTarget, CredentialId, MemoryStorage,
    SealedCredential, Store, TenantId,
};

/// Decodes arbitrary bytes as secret fields v1; what decodes must re-encode to the same bytes.
/// Must never panic (other than on a broken round trip).
pub fn secret_fields(data: &[u8]) {
    if let Ok(fields) = decode_secret_fields(data) {
        match encode_secret_fields(fields.iter().copied()) {
            Ok(again) => assert_eq!(&again[..], data, "secret fields do not round-trip"),
            Err(_) => panic!("decoded fields do not encode"),
        }
    }
}

fn fixture() -> Option<&'static (Store, TenantId, CredentialId)> {
    static F: OnceLock<Option<(Store, TenantId, CredentialId)>> = OnceLock::new();
    F.get_or_init(|| {
        let store = Store::new(
            Arc::new(MemoryStorage::new()),
            Arc::new(LocalKeyring::generate().ok()?),
            AuditTarget::Sink(Arc::new(MemorySink::new())),
        );
        let t = TenantId::new("fuzz").ok()?;
        store.create_tenant(&t, "Fuzz", "fuzz").ok()?;
        let id = CredentialId::parse("cred_0123456789abcdef0123456789abcdef").ok()?;
        Some((store, t, id))
    })
    .as_ref()
}

/// Offers arbitrary bytes as a client-sealed credential (the first byte picks the type and
/// whether public fields are given). Must never panic, and nothing not sealed under the
/// tenant's key may be stored.
pub fn sealed_create(data: &[u8]) {
    let Some((store, t, id)) = fixture() else {
        return;
    };
    let Ok(scope) = store.tenant(t, "fuzz") else {
        return;
    };
    let (ty, public) = match data.first().copied().unwrap_or(0) % 3 {
        0 => ("http_bearer_token", serde_json::json!({})),
        1 => (
            "website_login",
            serde_json::json!({"login_url": "https://x.example/", "username": "u"}),
        ),
        _ => (
            "postgres",
            serde_json::json!({"host": "db.example.com", "database": "app", "user": "app"}),
        ),
    };
    let r = scope.create_sealed(SealedCredential {
        id: id.clone(),
        type_name: ty.into(),
        name: "fuzz".into(),
        environment: "production".into(),
        public_fields: public,
        envelope: data.get(1..).unwrap_or_default().to_vec(),
        description: String::new(),
        tags: Vec::new(),
        expires_at: None,
    });
    assert!(
        r.is_err(),
        "a credential not sealed under the tenant's key was accepted"
    );
}

/// Checks arbitrary text as an outbound URL (the first byte picks the allowed classes; names
/// resolve to an address chosen by the second byte). Must never panic; an accepted URL's every
/// address is permitted by the policy, and its host survives a re-parse unchanged (what the
/// HTTP client connects to is what was checked).
#[cfg(feature = "net")]
pub fn destination(data: &[u8]) {
    use crate::net::{classify, AddressClass, Destination, NetworkPolicy, Resolve};

    struct Fixed(std::net::IpAddr);
    impl Resolve for Fixed {
        fn resolve(&self, _: &str, port: u16) -> std::io::Result<Vec<std::net::SocketAddr>> {
            Ok(vec![std::net::SocketAddr::new(self.0, port)])
        }
    }
    let [flags, pick, rest @ ..] = data else {
        return;
    };
    let Ok(raw) = std::str::from_utf8(rest) else {
        return;
    };
    let mut policy = NetworkPolicy::public_only();
    for (bit, class) in [
        (1, AddressClass::Loopback),
        (2, AddressClass::Private),
        (4, AddressClass::LinkLocal),
        (8, AddressClass::Reserved),
    ] {
        if flags & bit != 0 {
            policy = policy.allow(class);
        }
    }
    let ips = [
        "8.8.8.8",
        "127.0.0.1",
        "10.0.0.1",
        "169.254.169.254",
        "0.0.0.0",
        "::1",
    ];
    let Ok(ip) = ips[usize::from(*pick) % ips.len()].parse() else {
        return;
    };
    if let Ok(d) = Destination::check(raw, &policy, &Fixed(ip)) {
        for a in d.addrs() {
            assert!(policy.permits(a.ip()).is_ok(), "accepted a refused address");
            assert_ne!(classify(a.ip()), AddressClass::Reserved);
        }
        let again = url::Url::parse(d.url().as_str()).ok();
        assert_eq!(
            again.as_ref().and_then(|u| u.host_str()),
            d.url().host_str(),
            "the host changes on re-parse"
        );
    }
}

/// Reads arbitrary bytes as a PostgreSQL password file, for a few queries: never panics, and a
/// password found is never longer than the file.
pub fn pgpass(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for (host, database, user) in [
        ("localhost", "db", "u"),
        ("/run/pg", "*", ""),
        ("h:1", "d", "u"),
    ] {
        let q = crate::pgpass::PgpassQuery {
            host,
            port: 5432,
            database,
            user,
        };
        if let Some(p) = crate::pgpass::lookup(text, &q) {
            assert!(p.len() <= text.len(), "a password longer than its file");
        }
    }
}

/// Parses arbitrary bytes as a backup v1 (unauthenticated: the tag is not checked, so the body
/// parser is reached) and re-encodes what parses: it must open under the key it was re-encoded
/// with and parse to the same contents. Must never panic (other than on a broken round trip).
pub fn backup_file(data: &[u8]) {
    let key = credvault_audit::AuditKey::from_bytes(&[0x42; 32]);
    let _ = crate::backup::parse(data, &crate::backup::BackupLimits::default());
    let _ = crate::backup::testing::round_trip(data, &key);
}
