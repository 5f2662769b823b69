//! Entry points for the fuzz targets (not a public API).

use crate::{BrowserState, StoreKinds};

/// Offers arbitrary bytes to the browser-state parser, and checks what keeping a subset of an
/// accepted state does: it parses again, keeps its counts when everything is kept, and drops
/// every cookie when cookies are not kept. Must never panic.
pub fn state(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(state) = BrowserState::parse(text) else {
        return;
    };
    let Ok(all) = state.keeping(StoreKinds {
        cookies: true,
        local: true,
        session: true,
    }) else {
        panic!("an accepted state keeps everything");
    };
    assert_eq!(
        (all.cookies(), all.origins()),
        (state.cookies(), state.origins())
    );
    let Ok(none) = state.keeping(StoreKinds {
        cookies: false,
        local: true,
        session: false,
    }) else {
        panic!("an accepted state keeps a subset");
    };
    let v: serde_json::Value =
        serde_json::from_str(none.expose_json()).unwrap_or(serde_json::Value::Null);
    assert!(
        v.get("cookies")
            .is_none_or(|c| c.as_array().is_some_and(Vec::is_empty)),
        "no cookie is kept when cookies are not"
    );
}
