//! Property: any single-field edit of any stored credential row, made behind the store's
//! back, is detected by the record MAC on the next read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, OnceLock};

use credvault_store::audit::MemorySink;
use credvault_store::schema::RevealPolicy;
use credvault_store::storage::CredentialRow;
use credvault_store::{
    AuditTarget, CredentialId, LocalKeyring, MemoryStorage, NewCredential, Storage, Store,
    StoreError, TenantId,
};
use proptest::prelude::*;
use serde_json::json;

struct Fixture {
    store: Store,
    storage: Arc<MemoryStorage>,
    tenant: TenantId,
    ids: Vec<CredentialId>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let storage = Arc::new(MemoryStorage::new());
        let store = Store::new(
            storage.clone(),
            Arc::new(LocalKeyring::generate().unwrap()),
            AuditTarget::Sink(Arc::new(MemorySink::new())),
        );
        let tenant = TenantId::new("acme").unwrap();
        store.create_tenant(&tenant, "Acme", "admin").unwrap();
        let s = store.tenant(&tenant, "admin").unwrap();
        let mut ids = Vec::new();
        for i in 0..8 {
            let c = if i % 2 == 0 {
                NewCredential::new(
                    "llm_api_key",
                    format!("llm-{i}"),
                    json!({"api_key": format!("sk-{i}-abcdefgh"), "base_url": "https://api.example.com/v1"}),
                )
                .tags(["a", "b"])
                .description("d")
            } else if i % 4 == 1 {
                NewCredential::new(
                    "website_login",
                    format!("site-{i}"),
                    json!({"login_url": "https://example.com", "username": "u", "password": format!("pw-{i}")}),
                )
                .reveal("password", RevealPolicy::UseOnly)
            } else {
                NewCredential::new(
                    "website_login",
                    format!("site-{i}"),
                    json!({"login_url": "https://example.com", "username": "u", "password": format!("pw-{i}")}),
                )
                .expires_at(4_000_000_000_000)
            };
            ids.push(s.create(c).unwrap().id);
        }
        Fixture {
            store,
            storage,
            tenant,
            ids,
        }
    })
}

/// One edit of one field.
#[derive(Clone, Debug)]
enum Edit {
    Name(String),
    Type(String),
    Environment(String),
    Description(String),
    Tags(Vec<String>),
    FlipActive,
    Expires(Option<i64>),
    CreatedBy(String),
    CreatedAt(i64),
    UpdatedAt(i64),
    Version(u64),
    Public(String),
    SecretFields(Vec<String>),
    SecretByte(usize, u8),
    MacByte(usize, u8),
    MacTruncate(usize),
    Reveal(Vec<(String, RevealPolicy)>),
}

fn edit() -> impl Strategy<Value = Edit> {
    let s = "[a-z_.-]{0,12}";
    prop_oneof![
        s.prop_map(Edit::Name),
        prop::sample::select(vec![
            "llm_api_key",
            "website_login",
            "anthropic_api_key",
            "x"
        ])
        .prop_map(|t| Edit::Type(t.into())),
        s.prop_map(Edit::Environment),
        ".{0,20}".prop_map(Edit::Description),
        prop::collection::vec(s, 0..4).prop_map(Edit::Tags),
        Just(Edit::FlipActive),
        prop::option::of(any::<i64>()).prop_map(Edit::Expires),
        s.prop_map(Edit::CreatedBy),
        any::<i64>().prop_map(Edit::CreatedAt),
        any::<i64>().prop_map(Edit::UpdatedAt),
        any::<u64>().prop_map(Edit::Version),
        r#"\{"[a-z_]{1,8}":"[a-z:/.]{0,24}"\}"#.prop_map(Edit::Public),
        prop::collection::vec("[a-z_]{1,10}", 0..3).prop_map(Edit::SecretFields),
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Edit::SecretByte(i, x)),
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Edit::MacByte(i, x)),
        any::<usize>().prop_map(Edit::MacTruncate),
        prop::collection::vec(
            (
                prop::sample::select(vec!["password", "api_key", "x"]),
                prop::sample::select(vec![
                    RevealPolicy::Revealable,
                    RevealPolicy::UseOnly,
                    RevealPolicy::WriteOnly
                ])
            ),
            0..3
        )
        .prop_map(|v| Edit::Reveal(v.into_iter().map(|(f, p)| (f.to_owned(), p)).collect())),
    ]
}

fn apply(row: &CredentialRow, e: &Edit) -> CredentialRow {
    let mut r = row.clone();
    match e.clone() {
        Edit::Name(v) => r.name = v,
        Edit::Type(v) => r.type_name = v,
        Edit::Environment(v) => r.environment = v,
        Edit::Description(v) => r.description = v,
        Edit::Tags(v) => r.tags = v,
        Edit::FlipActive => r.is_active = !r.is_active,
        Edit::Expires(v) => r.expires_at = v,
        Edit::CreatedBy(v) => r.created_by = v,
        Edit::CreatedAt(v) => r.created_at = v,
        Edit::UpdatedAt(v) => r.updated_at = v,
        Edit::Version(v) => r.version = v,
        Edit::Public(v) => r.public = v,
        Edit::SecretFields(v) => r.secret_fields = v,
        Edit::Reveal(v) => r.reveal = v.into_iter().collect(),
        Edit::SecretByte(i, x) => {
            let n = r.secret.len();
            r.secret[i % n] ^= x;
        }
        Edit::MacByte(i, x) => {
            let n = r.mac.len();
            r.mac[i % n] ^= x;
        }
        Edit::MacTruncate(n) => {
            let len = r.mac.len();
            r.mac.truncate(n % len);
        }
    }
    r
}

/// Writes `row` over the stored one, whatever its version, without the store.
fn overwrite(storage: &MemoryStorage, row: &CredentialRow) {
    let stored = storage
        .credential(&row.tenant, &row.id)
        .unwrap()
        .unwrap()
        .version;
    storage
        .update_credential(row, stored, &mut |_| Ok(None))
        .unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn any_single_field_edit_of_any_row_is_detected(i in 0usize..8, e in edit()) {
        let f = fixture();
        let id = &f.ids[i];
        let original = f.storage.credential(&f.tenant, id).unwrap().unwrap();
        let edited = apply(&original, &e);
        prop_assume!(edited != original);
        // (The key id is edited in the SQLite tests: this backend refuses a row naming a key
        // it does not have.)
        overwrite(&f.storage, &edited);
        let s = f.store.tenant(&f.tenant, "checker").unwrap();
        let got = s.get(id);
        // Restore before asserting, so one failure does not cascade.
        overwrite(&f.storage, &original);
        prop_assert!(
            matches!(got, Err(StoreError::Integrity { .. })),
            "edit {:?} of row {} not detected: {:?}", e, i, got
        );
        // The untouched row still reads.
        prop_assert!(s.get(id).is_ok());
    }
}
