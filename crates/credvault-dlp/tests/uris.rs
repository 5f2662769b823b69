//! Secret URIs (`cv://`, `keychain://`): the parse table with typed errors, the canonical form,
//! `{{ URI }}` templates, rendering with a masker; a round-trip property over random names.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use credvault_dlp::{
    render_uris, template_uris, KeychainRef, RenderError, SecretUri, UriErrorKind, UriResolver,
    VaultRef, MAX_SEGMENT_LEN, MAX_URI_LEN,
};
use proptest::prelude::*;
use zeroize::Zeroizing;

fn vault(tenant: Option<&str>, name: &str, field: &str, env: Option<&str>) -> SecretUri {
    SecretUri::Vault(VaultRef {
        tenant: tenant.map(str::to_owned),
        name: name.to_owned(),
        field: field.to_owned(),
        environment: env.map(str::to_owned),
    })
}

#[test]
fn valid_forms() {
    let cases: &[(&str, SecretUri)] = &[
        ("cv://github/token", vault(None, "github", "token", None)),
        (
            "cv://acme/github/token",
            vault(Some("acme"), "github", "token", None),
        ),
        (
            "cv://github/token?env=production",
            vault(None, "github", "token", Some("production")),
        ),
        (
            "cv://acme/GitHub bot/token?env=prod",
            vault(Some("acme"), "GitHub bot", "token", Some("prod")),
        ),
        (
            "cv://Zugangsdaten für Straße/password",
            vault(None, "Zugangsdaten für Straße", "password", None),
        ),
        ("cv://数据库/密码", vault(None, "数据库", "密码", None)),
        (
            "cv://db%2Fmain/pass%20word",
            vault(None, "db/main", "pass word", None),
        ),
        ("cv://a%3Fb%25c/f%7D%7D", vault(None, "a?b%c", "f}}", None)),
        ("cv://%E2%9C%93/x", vault(None, "✓", "x", None)),
        (
            "keychain://credvault/master key",
            SecretUri::Keychain(KeychainRef {
                service: "credvault".into(),
                account: "master key".into(),
            }),
        ),
    ];
    for (text, want) in cases {
        assert_eq!(&SecretUri::parse(text).unwrap(), want, "{text}");
        let canonical = want.to_string();
        assert_eq!(&SecretUri::parse(&canonical).unwrap(), want, "{canonical}");
    }
    // Names with spaces print as they are; edge spaces and reserved characters are escaped.
    assert_eq!(
        vault(None, "GitHub bot", "token", None).to_string(),
        "cv://GitHub bot/token"
    );
    assert_eq!(
        vault(None, " a/b? ", "f", Some("prod")).to_string(),
        "cv://%20a%2Fb%3F%20/f?env=prod"
    );
    assert_eq!(
        vault(Some("acme"), "x[1]", "f", None).label(),
        "acme/x%5B1%5D/f"
    );
}

#[test]
fn invalid_forms_have_typed_errors() {
    use UriErrorKind as K;
    let long_name = format!("cv://{}/f", "n".repeat(MAX_SEGMENT_LEN + 1));
    let long_uri = format!("cv://a/{}", "%41".repeat(MAX_URI_LEN));
    let cases: &[(&str, UriErrorKind)] = &[
        ("op://vault/item/field", K::Scheme),
        ("CV://a/b", K::Scheme),
        ("cv:/a/b", K::Scheme),
        ("cv://onlyname", K::Segments),
        ("cv://a/b/c/d", K::Segments),
        ("cv:///f", K::EmptySegment),
        ("cv://a/", K::EmptySegment),
        ("cv://a/b%2", K::Escape),
        ("cv://a/b%zz", K::Escape),
        ("cv://a/%FF", K::Escape),
        ("cv://a/b%0A", K::Control),
        ("cv://a\tb/f", K::Control),
        ("cv://-acme/a/b", K::Tenant),
        ("cv://ac me/a/b", K::Tenant),
        ("cv://a/b?env=", K::Environment),
        ("cv://a/b?env=pro duction", K::Environment),
        ("cv://a/b?env=a&env=b", K::Query),
        ("cv://a/b?version=2", K::Query),
        ("cv://a/b?", K::Query),
        ("cv://a/b?env", K::Query),
        ("keychain://svc/acct?x=1", K::KeychainQuery),
        ("keychain://svc", K::Segments),
        ("keychain://svc/a/b", K::Segments),
        (&long_name, K::TooLong),
        (&long_uri, K::TooLong),
    ];
    for (text, kind) in cases {
        let e = SecretUri::parse(text).unwrap_err();
        assert_eq!(e.kind, *kind, "{text}");
        assert!(!e.to_string().is_empty());
    }
    assert!(SecretUri::looks_like("cv://x"));
    assert!(!SecretUri::looks_like("https://x"));
}

#[test]
fn templates_find_uris_and_leave_other_braces() {
    let t =
        "a={{ cv://db/user }} b={{cv://ops/db/pass?env=staging}} c={{ name }} d={{keychain://s/a}}";
    let found = template_uris(t).unwrap();
    let texts: Vec<&str> = found.iter().map(|(r, _)| &t[r.clone()]).collect();
    assert_eq!(
        texts,
        [
            "{{ cv://db/user }}",
            "{{cv://ops/db/pass?env=staging}}",
            "{{keychain://s/a}}"
        ]
    );
    assert_eq!(
        found[1].1,
        vault(Some("ops"), "db", "pass", Some("staging"))
    );

    let e = template_uris("x {{ cv://db/user ").unwrap_err();
    assert_eq!((e.kind, e.position), (UriErrorKind::Unclosed, 2));
    let e = template_uris("ok {{ cv://only }}").unwrap_err();
    assert_eq!((e.kind, e.position), (UriErrorKind::Segments, 3));
    let many = "{{cv://a/b}}".repeat(1025);
    assert_eq!(
        template_uris(&many).unwrap_err().kind,
        UriErrorKind::TooMany
    );
}

struct Map(HashMap<SecretUri, &'static str>);

impl UriResolver for Map {
    fn resolve(&self, uri: &SecretUri) -> Result<Zeroizing<String>, String> {
        self.0
            .get(uri)
            .map(|v| Zeroizing::new((*v).to_owned()))
            .ok_or_else(|| "no such credential".to_owned())
    }
}

#[test]
fn render_substitutes_and_masks_exactly_the_values_used() {
    let mut m = HashMap::new();
    m.insert(vault(None, "db", "user", None), "app_user");
    m.insert(vault(None, "db", "password", None), "Tr0ub4dor&3-horse");
    m.insert(vault(None, "unused", "x", None), "never-substituted-value");
    let r = render_uris(
        "user={{ cv://db/user }}\npass={{ cv://db/password }}\n",
        &Map(m),
    )
    .unwrap();
    assert_eq!(
        r.text.expose_secret(),
        "user=app_user\npass=Tr0ub4dor&3-horse\n"
    );
    assert_eq!(r.uris.len(), 2);
    assert_eq!(
        r.masker
            .mask("login app_user with Tr0ub4dor%263-horse, never-substituted-value"),
        "login [cv:db/user] with [cv:db/password], never-substituted-value"
    );
    assert!(!format!("{:?}", r.text).contains("Tr0ub4dor"));

    let e = render_uris("{{ cv://nope/x }}", &Map(HashMap::new())).unwrap_err();
    assert_eq!(
        e,
        RenderError::Resolve {
            reference: "nope/x".into(),
            reason: "no such credential".into()
        }
    );
    assert!(matches!(
        render_uris("{{ cv://bad }}", &Map(HashMap::new())),
        Err(RenderError::Uri(_))
    ));
}

fn name() -> impl Strategy<Value = String> {
    // Any characters but controls, including every reserved one and edge spaces.
    "[ a-zA-Z0-9%/?&=#{}\\[\\]._~äß✓数 -]{1,24}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn canonical_form_parses_back(
        tenant in proptest::option::of("[a-z0-9][a-z0-9_.-]{0,10}"),
        n in name(),
        f in name(),
        env in proptest::option::of("[a-zA-Z0-9_.-]{1,12}"),
        keychain in any::<bool>(),
    ) {
        let uri = if keychain {
            SecretUri::Keychain(KeychainRef { service: n.clone(), account: f.clone() })
        } else {
            vault(tenant.as_deref(), &n, &f, env.as_deref())
        };
        let text = uri.to_string();
        prop_assert_eq!(SecretUri::parse(&text).unwrap(), uri.clone());
        // Inside a template, with spaces around it, the same URI comes back.
        let t = format!("x {{{{ {text} }}}} y");
        let found = template_uris(&t).unwrap();
        prop_assert_eq!(found.len(), 1);
        prop_assert_eq!(&found[0].1, &uri);
        let label = uri.label();
        prop_assert!(label.len() <= 200 && !label.contains(['[', ']']));
    }

    #[test]
    fn parse_never_panics(s in "\\PC{0,80}") {
        let _ = SecretUri::parse(&s);
        let _ = template_uris(&s);
    }
}
