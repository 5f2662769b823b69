//! `{{cv:...}}` references: strict parsing with clear errors, and rendering through a resolver
//! with a masker for exactly the values used.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use credvault_dlp::{parse_reference, references, render, Reference, RenderError, Resolver};
use zeroize::Zeroizing;

struct Map(HashMap<String, String>);

impl Resolver for Map {
    fn resolve(&self, r: &Reference) -> Result<Zeroizing<String>, String> {
        self.0
            .get(&r.path())
            .map(|v| Zeroizing::new(v.clone()))
            .ok_or_else(|| "no such credential".to_owned())
    }
}

fn vault() -> Map {
    Map(HashMap::from([
        (
            "github/token".to_owned(),
            "ghp_8f3KqZ2vX9LmP4tR7wY1nB6cD0eF5gH2jK3l".to_owned(),
        ),
        (
            "staging/db/password".to_owned(),
            "s3cr3t-Pa55-word".to_owned(),
        ),
        ("router/pin".to_owned(), "1234".to_owned()),
    ]))
}

#[test]
fn parsing() {
    let r = parse_reference("{{cv:github/token}}").unwrap();
    assert_eq!(
        (r.environment, r.credential.as_str(), r.field.as_str()),
        (None, "github", "token")
    );
    let r = parse_reference("{{cv:staging/db.main-1/pass_word}}").unwrap();
    assert_eq!(r.environment.as_deref(), Some("staging"));
    assert_eq!(r.to_string(), "{{cv:staging/db.main-1/pass_word}}");
    let all = references("a {{cv:x/y}} b {{other}} c {{cv:e/x/y}}").unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].0, 2..12);
    for (bad, why) in [
        ("{{cv:github}}", "expected credential/field"),
        ("{{cv:a/b/c/d}}", "expected credential/field"),
        ("{{cv:github/token", "not closed"),
        ("{{cv:/token}}", "names are"),
        ("{{cv:git hub/token}}", "names are"),
        ("{{cv:github/tok}en}}", "names are"),
        ("{{cv:-x/token}}", "names are"),
        ("{{cv:github/token}} ", "not a single"),
    ] {
        let e = parse_reference(bad).unwrap_err();
        assert!(e.reason.contains(why), "{bad}: {e}");
    }
    let e = references("ok {{cv:a/b}} then {{cv:bad}}").unwrap_err();
    assert_eq!(e.position, 19);
    let many = "{{cv:a/b}}".repeat(1025);
    assert!(references(&many).is_err());
}

#[test]
fn render_substitutes_and_masks_what_it_used() {
    let out = render("git clone https://x:{{cv:github/token}}@github.com/a/b && psql -W {{cv:staging/db/password}} # {{cv:router/pin}}", &vault()).unwrap();
    assert_eq!(
        out.text.expose_secret(),
        "git clone https://x:ghp_8f3KqZ2vX9LmP4tR7wY1nB6cD0eF5gH2jK3l@github.com/a/b && psql -W s3cr3t-Pa55-word # 1234"
    );
    assert!(!format!("{:?}", out.text).contains("ghp_"));
    assert_eq!(out.references.len(), 3);
    // The consumer's output is cleaned of exactly those values, even the short PIN.
    let tool_output =
        "cloning with ghp_8f3KqZ2vX9LmP4tR7wY1nB6cD0eF5gH2jK3l; pw=s3cr3t-Pa55-word pin 1234";
    assert_eq!(
        out.masker.mask(tool_output),
        "cloning with [cv:github/token]; pw=[cv:staging/db/password] pin [cv:router/pin]"
    );
    assert_eq!(out.masker.secrets(), 3);
}

#[test]
fn render_errors_name_the_reference_never_a_value() {
    let e = render("x {{cv:nope/field}}", &vault()).unwrap_err();
    assert_eq!(
        e,
        RenderError::Resolve {
            reference: "nope/field".into(),
            reason: "no such credential".into()
        }
    );
    let e = render("x {{cv:broken}}", &vault()).unwrap_err();
    assert!(matches!(e, RenderError::Reference(_)));
    let plain = render("no references here {{ not_cv }}", &vault()).unwrap();
    assert_eq!(
        plain.text.expose_secret(),
        "no references here {{ not_cv }}"
    );
    assert_eq!(plain.masker.secrets(), 0);
}
