//! Browser state in Playwright's `storageState` shape.

use std::fmt;

use serde_json::Value;
use zeroize::Zeroizing;

use crate::{SessionError, StoreKinds};

/// Largest state accepted, in bytes of JSON.
pub const MAX_STATE_LEN: usize = 8 << 20;
/// Most cookies in one state.
pub const MAX_COOKIES: usize = 10_000;
/// Most origins in one state.
pub const MAX_ORIGINS: usize = 1_000;
/// Most local or session storage items of one origin.
pub const MAX_ITEMS: usize = 10_000;

/// A browser's saved state: cookies, and per origin its local storage and (this crate's
/// extension) session storage, as the JSON document Playwright's
/// `browserContext.storageState()` writes and `browser.newContext({ storageState })` reads:
///
/// ```json
/// {"cookies": [{"name": "sid", "value": "…", "domain": "example.com", "path": "/",
///               "expires": -1, "httpOnly": true, "secure": true, "sameSite": "Lax"}],
///  "origins": [{"origin": "https://example.com",
///               "localStorage": [{"name": "token", "value": "…"}],
///               "sessionStorage": [{"name": "tab", "value": "…"}]}]}
/// ```
///
/// Members this crate does not know are kept as they are (a newer Playwright's, say); an
/// automation that does not know `sessionStorage` ignores it. It holds live session
/// cookies, so it is a secret: no `Clone`, a `Debug` that shows only counts, its text wiped
/// on drop.
pub struct BrowserState {
    json: Zeroizing<String>,
    cookies: usize,
    origins: usize,
}

impl fmt::Debug for BrowserState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrowserState")
            .field("cookies", &self.cookies)
            .field("origins", &self.origins)
            .finish_non_exhaustive()
    }
}

fn invalid(reason: impl Into<String>) -> SessionError {
    SessionError::InvalidState {
        reason: reason.into(),
    }
}

fn check_items(v: &Value, at: &str) -> Result<(), SessionError> {
    let items = v
        .as_array()
        .ok_or_else(|| invalid(format!("{at} must be an array")))?;
    if items.len() > MAX_ITEMS {
        return Err(invalid(format!("{at} has more than {MAX_ITEMS} items")));
    }
    for (i, item) in items.iter().enumerate() {
        for k in ["name", "value"] {
            if !item.get(k).is_some_and(Value::is_string) {
                return Err(invalid(format!("{at}[{i}].{k} must be a string")));
            }
        }
    }
    Ok(())
}

fn check(doc: &Value) -> Result<(usize, usize), SessionError> {
    let obj = doc
        .as_object()
        .ok_or_else(|| invalid("the document must be a JSON object"))?;
    let cookies = match obj.get("cookies") {
        None => 0,
        Some(c) => {
            let c = c
                .as_array()
                .ok_or_else(|| invalid("cookies must be an array"))?;
            if c.len() > MAX_COOKIES {
                return Err(invalid(format!("more than {MAX_COOKIES} cookies")));
            }
            for (i, cookie) in c.iter().enumerate() {
                if !cookie.is_object() {
                    return Err(invalid(format!("cookies[{i}] must be an object")));
                }
                for k in ["name", "value", "domain", "path"] {
                    if !cookie.get(k).is_some_and(Value::is_string) {
                        return Err(invalid(format!("cookies[{i}].{k} must be a string")));
                    }
                }
                if cookie.get("expires").is_some_and(|e| !e.is_number()) {
                    return Err(invalid(format!("cookies[{i}].expires must be a number")));
                }
                for k in ["httpOnly", "secure"] {
                    if cookie.get(k).is_some_and(|e| !e.is_boolean()) {
                        return Err(invalid(format!("cookies[{i}].{k} must be true or false")));
                    }
                }
                if let Some(s) = cookie.get("sameSite") {
                    if !matches!(s.as_str(), Some("Strict" | "Lax" | "None")) {
                        return Err(invalid(format!(
                            "cookies[{i}].sameSite must be Strict, Lax or None"
                        )));
                    }
                }
            }
            c.len()
        }
    };
    let origins = match obj.get("origins") {
        None => 0,
        Some(o) => {
            let o = o
                .as_array()
                .ok_or_else(|| invalid("origins must be an array"))?;
            if o.len() > MAX_ORIGINS {
                return Err(invalid(format!("more than {MAX_ORIGINS} origins")));
            }
            for (i, origin) in o.iter().enumerate() {
                if !origin.get("origin").is_some_and(Value::is_string) {
                    return Err(invalid(format!("origins[{i}].origin must be a string")));
                }
                match origin.get("localStorage") {
                    Some(l) => check_items(l, &format!("origins[{i}].localStorage"))?,
                    None => return Err(invalid(format!("origins[{i}].localStorage is missing"))),
                }
                if let Some(s) = origin.get("sessionStorage") {
                    check_items(s, &format!("origins[{i}].sessionStorage"))?;
                }
            }
            o.len()
        }
    };
    Ok((cookies, origins))
}

impl BrowserState {
    /// Parses and checks a `storageState` document.
    ///
    /// # Errors
    /// [`SessionError::InvalidState`] naming the member and the reason (never a value).
    pub fn parse(text: &str) -> Result<Self, SessionError> {
        if text.len() > MAX_STATE_LEN {
            return Err(invalid(format!("longer than {MAX_STATE_LEN} bytes")));
        }
        let mut doc: Value =
            serde_json::from_str(text).map_err(|e| invalid(format!("not JSON: {e}")))?;
        let counts = check(&doc);
        credvault_store::wipe_json(&mut doc);
        let (cookies, origins) = counts?;
        Ok(Self {
            json: Zeroizing::new(text.to_owned()),
            cookies,
            origins,
        })
    }

    /// The state as JSON, for the browser that loads it.
    pub fn expose_json(&self) -> &str {
        &self.json
    }

    /// How many cookies.
    pub fn cookies(&self) -> usize {
        self.cookies
    }

    /// How many origins (with local or session storage).
    pub fn origins(&self) -> usize {
        self.origins
    }

    /// The state with only the kinds `kinds` keeps: cookies emptied, local storage emptied,
    /// session storage removed, as configured.
    pub(crate) fn keeping(&self, kinds: StoreKinds) -> Result<Self, SessionError> {
        let mut doc: Value =
            serde_json::from_str(&self.json).map_err(|e| invalid(format!("not JSON: {e}")))?;
        if let Some(obj) = doc.as_object_mut() {
            if !kinds.cookies {
                if let Some(c) = obj.get_mut("cookies") {
                    credvault_store::wipe_json(c);
                    *c = Value::Array(Vec::new());
                }
            }
            if let Some(Value::Array(origins)) = obj.get_mut("origins") {
                for o in origins.iter_mut() {
                    let Some(o) = o.as_object_mut() else { continue };
                    if !kinds.local {
                        if let Some(l) = o.get_mut("localStorage") {
                            credvault_store::wipe_json(l);
                            *l = Value::Array(Vec::new());
                        }
                    }
                    if !kinds.session {
                        if let Some(mut s) = o.remove("sessionStorage") {
                            credvault_store::wipe_json(&mut s);
                        }
                    }
                }
            }
        }
        let text = Zeroizing::new(serde_json::to_string(&doc).map_err(|e| invalid(e.to_string()))?);
        credvault_store::wipe_json(&mut doc);
        Self::parse(&text)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    const FULL: &str = r#"{"cookies":[{"name":"sid","value":"s3cr3t","domain":"example.com","path":"/","expires":-1,"httpOnly":true,"secure":true,"sameSite":"Lax","partitionKey":"x"}],
        "origins":[{"origin":"https://example.com","localStorage":[{"name":"t","value":"l0cal"}],"sessionStorage":[{"name":"s","value":"sess10n"}]}],"future":1}"#;

    #[test]
    fn a_playwright_state_parses_and_keeps_what_it_does_not_know() {
        let s = BrowserState::parse(FULL).unwrap();
        assert_eq!((s.cookies(), s.origins()), (1, 1));
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("s3cr3t") && dbg.contains("cookies: 1"));
        let kept = s
            .keeping(StoreKinds::parse("cookies,local,session").unwrap())
            .unwrap();
        let v: Value = serde_json::from_str(kept.expose_json()).unwrap();
        assert_eq!(v["future"], 1);
        assert_eq!(v["cookies"][0]["partitionKey"], "x");
    }

    #[test]
    fn kinds_not_kept_are_dropped() {
        let s = BrowserState::parse(FULL).unwrap();
        let only_cookies = s.keeping(StoreKinds::parse("cookies").unwrap()).unwrap();
        let t = only_cookies.expose_json();
        assert!(t.contains("s3cr3t") && !t.contains("l0cal") && !t.contains("sess10n"));
        let default = s.keeping(StoreKinds::default()).unwrap();
        let t = default.expose_json();
        assert!(t.contains("s3cr3t") && t.contains("l0cal") && !t.contains("sess10n"));
        let local = s
            .keeping(StoreKinds::parse("local,session").unwrap())
            .unwrap();
        let t = local.expose_json();
        assert!(!t.contains("s3cr3t") && t.contains("l0cal") && t.contains("sess10n"));
    }

    #[test]
    fn malformed_states_are_refused_with_the_member_named() {
        for (doc, needle) in [
            ("[]", "object"),
            (r#"{"cookies":{}}"#, "cookies must be an array"),
            (
                r#"{"cookies":[{"name":"a","value":"b","domain":"c"}]}"#,
                "cookies[0].path",
            ),
            (
                r#"{"cookies":[{"name":"a","value":"b","domain":"c","path":"/","sameSite":"lax"}]}"#,
                "sameSite",
            ),
            (r#"{"origins":[{"origin":"o"}]}"#, "localStorage is missing"),
            (
                r#"{"origins":[{"origin":"o","localStorage":[{"name":"n","value":7}]}]}"#,
                "localStorage[0].value",
            ),
            ("{", "not JSON"),
        ] {
            let e = BrowserState::parse(doc).unwrap_err().to_string();
            assert!(e.contains(needle), "{doc}: {e}");
        }
        let big = format!(r#"{{"x":"{}"}}"#, "a".repeat(MAX_STATE_LEN));
        assert!(BrowserState::parse(&big)
            .unwrap_err()
            .to_string()
            .contains("longer"));
    }

    proptest! {
        #[test]
        fn any_text_is_parsed_without_panicking(s in "\\PC{0,200}") {
            let _ = BrowserState::parse(&s);
        }

        #[test]
        fn keeping_everything_keeps_every_value(
            names in proptest::collection::vec("[a-z]{1,8}", 0..6),
            values in proptest::collection::vec("\\PC{0,12}", 6),
        ) {
            let cookies: Vec<Value> = names.iter().zip(&values).map(|(n, v)| serde_json::json!({
                "name": n, "value": v, "domain": "d", "path": "/"})).collect();
            let doc = serde_json::json!({"cookies": cookies, "origins": [{"origin": "o",
                "localStorage": names.iter().zip(&values).map(|(n, v)| serde_json::json!({"name": n, "value": v})).collect::<Vec<_>>()}]});
            let s = BrowserState::parse(&doc.to_string()).unwrap();
            let all = s.keeping(StoreKinds::parse("cookies,local,session").unwrap()).unwrap();
            let back: Value = serde_json::from_str(all.expose_json()).unwrap();
            prop_assert_eq!(back, doc);
        }
    }
}
