//! The credential setup page (`/ui/`): sign in with an API key that has the `write` (or
//! `admin`) scope, list the tenant's credentials, add and edit them through forms generated
//! from each type's schema, get a TOTP code while setting up 2FA, test, delete (decision 0026).
//!
//! Secrets are write-only here: a secret field is a password input that is never filled, on
//! edit an empty input means "keep" and typing replaces. No secret goes into a URL, a page or
//! a log. Sessions live in the gateway's memory (one process; a restart signs everyone out):
//! the cookie is 32 random bytes, only its SHA-256 is kept, `HttpOnly`, `SameSite=Lax`,
//! `Secure` over TLS, bound to the host it was made on, with an idle and an absolute lifetime;
//! the key behind it is checked again (revoked, expired, tenant, scope) on every request. Every
//! form carries the session's CSRF token (the "Get code" script sends it as a header); the
//! sign-in form has its own (double-submit cookie). Pages carry a Content-Security-Policy
//! without inline script, `X-Frame-Options: DENY`, `no-store`. Every page request goes through
//! the gate: one `request` record each (actor the key), the store's own records for what it
//! does.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form, Json};
use credvault_store::schema::{CredentialType, FieldDef, FieldKind, Format};
use credvault_store::{
    CredentialInfo, CredentialUpdate, ListFilter, NewCredential, StoreError, SECRET_MARKER,
};
use ring::rand::SecureRandom;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::apikey::{ApiScope, KeyInfo};
use crate::error::ApiError;
use crate::gateway::{blocking, scope, Caller, Shared};

/// The session cookie.
pub(crate) const COOKIE: &str = "cv_ui";
/// The sign-in form's CSRF cookie.
const LOGIN_COOKIE: &str = "cv_ui_login";
/// How long a session lasts without a request.
pub(crate) const SESSION_IDLE: Duration = Duration::from_secs(15 * 60);
/// How long a session lasts at most.
pub(crate) const SESSION_ABSOLUTE: Duration = Duration::from_secs(8 * 60 * 60);
/// Sessions kept at most (the oldest go first).
const MAX_SESSIONS: usize = 10_000;
/// A credential expiring within this is marked "expires soon".
const SOON_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// The paths a visitor without a session may ask for.
pub(crate) fn is_public(path: &str) -> bool {
    matches!(path, "/ui" | "/ui/" | "/ui/login")
}

/// The static files (no key, no record: they hold no data).
pub(crate) fn is_static(path: &str) -> bool {
    matches!(path, "/ui/static/app.js" | "/ui/static/app.css")
}

/// One signed-in browser.
#[derive(Clone)]
pub(crate) struct Session {
    pub(crate) key_id: String,
    host: String,
    pub(crate) csrf: String,
    created: Instant,
    seen: Instant,
}

/// The signed-in browsers, by SHA-256 of their cookie.
#[derive(Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

fn digest(cookie: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, cookie.as_bytes()).as_ref());
    out
}

fn random_token() -> Result<String, ApiError> {
    use base64::Engine as _;
    let mut b = Zeroizing::new([0u8; 32]);
    ring::rand::SystemRandom::new()
        .fill(&mut b[..])
        .map_err(|_| ApiError::internal())?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&b[..]))
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session for `key_id` on `host`: the cookie value (never kept) and the session.
    fn create(&self, key_id: &str, host: &str) -> Result<(String, Session), ApiError> {
        let cookie = random_token()?;
        let now = Instant::now();
        let session = Session {
            key_id: key_id.to_owned(),
            host: host.to_owned(),
            csrf: random_token()?,
            created: now,
            seen: now,
        };
        let mut map = self.lock();
        map.retain(|_, s| alive(s, now));
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.seen).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(digest(&cookie), session.clone());
        Ok((cookie, session))
    }

    /// The live session of `cookie` on `host`, its idle time restarted.
    pub(crate) fn get(&self, cookie: &str, host: &str) -> Option<Session> {
        let now = Instant::now();
        let mut map = self.lock();
        let d = digest(cookie);
        let s = map.get_mut(&d)?;
        if !alive(s, now) {
            map.remove(&d);
            return None;
        }
        if s.host != host {
            return None;
        }
        s.seen = now;
        Some(s.clone())
    }

    fn remove(&self, cookie: &str) {
        self.lock().remove(&digest(cookie));
    }
}

fn alive(s: &Session, now: Instant) -> bool {
    now.duration_since(s.seen) < SESSION_IDLE && now.duration_since(s.created) < SESSION_ABSOLUTE
}

/// The value of cookie `name` in the request.
pub(crate) fn cookie<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// What a page handler knows of a visitor without a session (the sign-in page).
#[derive(Clone)]
pub(crate) struct Visitor {
    pub(crate) tenant: credvault_store::TenantId,
    pub(crate) host: String,
    pub(crate) tls: bool,
}

/// The session of a signed-in request (beside its [`Caller`]).
#[derive(Clone)]
pub(crate) struct UiSession {
    pub(crate) session: Session,
    pub(crate) tls: bool,
}

/// Put on the sign-in answer so that the gate's record names the key that signed in.
#[derive(Clone)]
pub(crate) struct SignedIn(pub(crate) String);

/// Whether a key may use the page.
pub(crate) fn may_use(key: &KeyInfo) -> bool {
    key.policy.scopes.contains(&ApiScope::Write) || key.policy.scopes.contains(&ApiScope::Admin)
}

/// The page's changes need the key that signed in to have `write` or `admin` (checked at
/// admission too; again here so that no handler depends on it).
fn writer(c: &Caller) -> Result<(), ApiError> {
    if may_use(&c.key) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "insufficient_scope",
            "this API key lacks the `write` (or `admin`) scope",
        ))
    }
}

/// Adds the page's security headers to every `/ui/` answer.
pub(crate) async fn headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// An answer for a request the gate refused: sign in again, or a short page.
pub(crate) fn refused(e: ApiError) -> Response {
    if e.status == StatusCode::UNAUTHORIZED {
        return redirect("/ui/login");
    }
    let body = format!(
        "<h1>{}</h1><p>{}</p><p><a href=\"/ui/credentials\">Back to the credentials</a></p>",
        esc(e.status.canonical_reason().unwrap_or("Refused")),
        esc(&e.message)
    );
    (e.status, html_page("Refused", &body, None)).into_response()
}

fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// HTML-escaped text (element content and quoted attribute values).
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A path segment: percent-encoded except unreserved characters.
fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A whole page. `nav`: the signed-in header (tenant, CSRF token).
fn html_page(title: &str, body: &str, nav: Option<(&str, &str)>) -> axum::response::Html<String> {
    let mut head = String::new();
    let _ = write!(
        head,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · credvault</title><link rel=\"stylesheet\" href=\"/ui/static/app.css\">",
        esc(title)
    );
    if let Some((_, csrf)) = nav {
        let _ = write!(head, "<meta name=\"csrf-token\" content=\"{}\">", esc(csrf));
    }
    head.push_str("<script src=\"/ui/static/app.js\" defer></script></head><body>");
    if let Some((tenant, csrf)) = nav {
        let _ = write!(
            head,
            "<header><nav aria-label=\"Main\"><a href=\"/ui/credentials\">Credentials</a> \
             <span class=\"tenant\">tenant {}</span> \
             <form method=\"post\" action=\"/ui/logout\" class=\"inline\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\">Sign out</button></form></nav></header>",
            esc(tenant),
            esc(csrf)
        );
    }
    let _ = write!(head, "<main>{body}</main></body></html>");
    axum::response::Html(head)
}

fn signed_page(c: &Caller, u: &UiSession, title: &str, body: &str) -> Response {
    html_page(title, body, Some((c.tenant.as_str(), &u.session.csrf))).into_response()
}

fn cookie_header(
    name: &str,
    value: &str,
    path: &str,
    max_age: u64,
    tls: bool,
    same: &str,
) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite={same}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn ct_eq(a: &str, b: &str) -> bool {
    bool::from(subtle::ConstantTimeEq::ct_eq(a.as_bytes(), b.as_bytes()))
}

/// Checks a form's or a script's CSRF token against the session's.
fn check_csrf(u: &UiSession, given: Option<&str>) -> Result<(), ApiError> {
    match given {
        Some(t) if ct_eq(t, &u.session.csrf) => Ok(()),
        _ => Err(ApiError::forbidden(
            "csrf",
            "the form is stale or did not come from this page; reload it and try again",
        )),
    }
}

/// A form as name/value pairs (repeated names allowed), wiped when dropped.
pub(crate) struct Pairs(Vec<(String, String)>);

impl Drop for Pairs {
    fn drop(&mut self) {
        for (_, v) in &mut self.0 {
            zeroize::Zeroize::zeroize(v);
        }
    }
}

impl Pairs {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn form_pairs(
    f: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Result<Pairs, ApiError> {
    f.map(|Form(v)| Pairs(v))
        .map_err(|_| ApiError::bad_request("the form could not be read"))
}

// ---------------------------------------------------------------------------------------
// Sign-in and sign-out.

/// `GET /ui` and `/ui/`.
pub(crate) async fn root(
    headers: HeaderMap,
    State(s): State<Arc<Shared>>,
    Extension(v): Extension<Visitor>,
) -> Response {
    match cookie(&headers, COOKIE).and_then(|c| s.sessions.get(c, &v.host)) {
        Some(_) => redirect("/ui/credentials"),
        None => redirect("/ui/login"),
    }
}

fn login_form(
    v: &Visitor,
    message: Option<&str>,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let token = random_token()?;
    let mut body = String::from("<h1>Sign in</h1>");
    if let Some(m) = message {
        let _ = write!(body, "<p class=\"error\" role=\"alert\">{}</p>", esc(m));
    }
    let _ = write!(
        body,
        "<p>Sign in with an API key of this host's tenant (<strong>{}</strong>) that has the \
         <code>write</code> or <code>admin</code> scope.</p>\
         <form method=\"post\" action=\"/ui/login\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <div class=\"field\"><label for=\"key\">API key</label>\
         <input id=\"key\" name=\"key\" type=\"password\" autocomplete=\"off\" required \
         spellcheck=\"false\" placeholder=\"cvk_...\"></div>\
         <button type=\"submit\">Sign in</button></form>",
        esc(v.tenant.as_str()),
        esc(&token)
    );
    let mut r = (status, html_page("Sign in", &body, None)).into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(LOGIN_COOKIE, &token, "/ui/login", 3600, v.tls, "Strict"),
    );
    Ok(r)
}

/// `GET /ui/login`.
pub(crate) async fn login_page(Extension(v): Extension<Visitor>) -> Response {
    login_form(&v, None, StatusCode::OK).unwrap_or_else(refused)
}

/// `POST /ui/login`: the key becomes a session (a new one every time: the cookie is rotated).
pub(crate) async fn login(
    State(s): State<Arc<Shared>>,
    Extension(v): Extension<Visitor>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let run = async {
        let f = form_pairs(form)?;
        let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
        if expected.is_empty() || !f.get("csrf").is_some_and(|t| ct_eq(t, expected)) {
            return Ok((
                None,
                login_form(
                    &v,
                    Some("The sign-in form expired; try again."),
                    StatusCode::FORBIDDEN,
                )?,
            ));
        }
        let key = Zeroizing::new(f.get("key").unwrap_or_default().trim().to_owned());
        let keys = Arc::clone(&s.keys);
        let now = crate::gateway::now_ms();
        let checked = blocking(move || Ok(keys.authenticate(&key, now))).await?;
        let info = match checked {
            Ok(info) if info.policy.tenant == v.tenant && may_use(&info) => info,
            Ok(info) => {
                return Ok((
                    Some(info.id),
                    login_form(
                        &v,
                        Some("This key cannot set up credentials here: it needs the write or admin scope, for this host's tenant."),
                        StatusCode::FORBIDDEN,
                    )?,
                ))
            }
            Err(_) => {
                return Ok((
                    None,
                    login_form(&v, Some("That key was not accepted."), StatusCode::UNAUTHORIZED)?,
                ))
            }
        };
        s.check_rate(&info)?;
        if let Some(old) = cookie(&headers, COOKIE) {
            s.sessions.remove(old);
        }
        let (value, _) = s.sessions.create(&info.id, &v.host)?;
        let mut r = redirect("/ui/credentials");
        let max = SESSION_ABSOLUTE.as_secs();
        r.headers_mut().append(
            header::SET_COOKIE,
            cookie_header(COOKIE, &value, "/ui", max, v.tls, "Lax"),
        );
        r.headers_mut().append(
            header::SET_COOKIE,
            cookie_header(LOGIN_COOKIE, "", "/ui/login", 0, v.tls, "Strict"),
        );
        Ok::<_, ApiError>((Some(info.id), r))
    };
    match run.await {
        Ok((id, mut r)) => {
            if let Some(id) = id {
                r.extensions_mut().insert(SignedIn(id));
            }
            r
        }
        Err(e) => refused(e),
    }
}

/// `POST /ui/logout`.
pub(crate) async fn logout(
    State(s): State<Arc<Shared>>,
    Extension(u): Extension<UiSession>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let run = || {
        let f = form_pairs(form)?;
        check_csrf(&u, f.get("csrf"))?;
        if let Some(c) = cookie(&headers, COOKIE) {
            s.sessions.remove(c);
        }
        let mut r = redirect("/ui/login");
        r.headers_mut().append(
            header::SET_COOKIE,
            cookie_header(COOKIE, "", "/ui", 0, u.tls, "Lax"),
        );
        Ok::<_, ApiError>(r)
    };
    run().unwrap_or_else(refused)
}

// ---------------------------------------------------------------------------------------
// The list.

fn time_text(ms: i64) -> String {
    credvault_store::audit::Timestamp::from_unix_millis(u64::try_from(ms).unwrap_or(0)).to_string()
}

/// `GET /ui/credentials`.
pub(crate) async fn list(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Extension(u): Extension<UiSession>,
) -> Response {
    let (s2, c2) = (Arc::clone(&s), c.clone());
    let items = blocking(move || {
        let mut items = scope(&s2, &c2)?.list(&ListFilter::new())?;
        items.retain(|i| c2.key.policy.covers(&i.name, &i.environment));
        items.sort_by(|a, b| (&a.name, &a.environment).cmp(&(&b.name, &b.environment)));
        Ok(items)
    })
    .await;
    let items = match items {
        Ok(i) => i,
        Err(e) => return refused(e),
    };
    let now = crate::gateway::now_ms();
    let mut body = String::from("<h1>Credentials</h1>");
    if items.is_empty() {
        body.push_str("<p>No credentials yet.</p>");
    } else {
        body.push_str(
            "<table><caption>Credentials of this tenant</caption><thead><tr>\
             <th scope=\"col\">Name</th><th scope=\"col\">Type</th>\
             <th scope=\"col\">Environment</th><th scope=\"col\">Active</th>\
             <th scope=\"col\">Expires</th><th scope=\"col\">Last used</th>\
             <th scope=\"col\">Last test</th></tr></thead><tbody>",
        );
        for i in &items {
            let expiry = match i.expires_at {
                None => "never".to_owned(),
                Some(t) if t <= now => format!(
                    "<span class=\"expired\">expired {}</span>",
                    esc(&time_text(t))
                ),
                Some(t) if t - now <= SOON_MS => {
                    format!(
                        "<span class=\"soon\">expires soon: {}</span>",
                        esc(&time_text(t))
                    )
                }
                Some(t) => esc(&time_text(t)),
            };
            let test = match (&i.test_status, i.last_tested) {
                (Some(st), Some(t)) => format!("{} ({})", esc(st), esc(&time_text(t))),
                _ => "not tested".to_owned(),
            };
            let _ = write!(
                body,
                "<tr><td><a href=\"/ui/credentials/{}/edit?env={}\">{}</a></td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                seg(&i.name),
                seg(&i.environment),
                esc(&i.name),
                esc(&i.type_name),
                esc(&i.environment),
                if i.is_active { "yes" } else { "no" },
                expiry,
                i.last_used_at.map_or_else(|| "never".to_owned(), |t| esc(&time_text(t))),
                test
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str(
        "<h2>Add a credential</h2><form method=\"get\" action=\"/ui/credentials/new\">\
         <div class=\"field\"><label for=\"type\">Type</label><select id=\"type\" name=\"type\">",
    );
    for t in s.store.registry().iter() {
        let d = t.definition();
        let _ = write!(
            body,
            "<option value=\"{}\">{}</option>",
            esc(&d.name),
            esc(&d.display_name)
        );
    }
    body.push_str("</select></div><button type=\"submit\">Add</button></form>");
    signed_page(&c, &u, "Credentials", &body)
}

// ---------------------------------------------------------------------------------------
// The form.

/// Whether a field holds an authenticator key ("Get code").
fn is_otp_key(f: &FieldDef) -> bool {
    (f.kind == FieldKind::Password || f.secret)
        && (f.format == Some(Format::Base32) || f.key == "totp_secret")
}

fn is_secret(f: &FieldDef) -> bool {
    f.kind == FieldKind::Password || f.secret
}

/// What the form shows: the saved credential (edit) or nothing (new), the values typed
/// (after a refused save: public ones only), the errors by field.
struct FormState<'a> {
    ty: &'a CredentialType,
    saved: Option<&'a CredentialInfo>,
    typed: Option<&'a Pairs>,
    errors: &'a [(String, String)],
    banner: Option<String>,
}

fn field_html(out: &mut String, st: &FormState<'_>, f: &FieldDef) {
    if f.kind == FieldKind::Hidden && !f.secret {
        return;
    }
    let id = format!("f-{}", f.key);
    let name = format!("f.{}", f.key);
    let saved_value = st.saved.and_then(|i| i.fields.get(&f.key));
    let secret_saved = saved_value.and_then(serde_json::Value::as_str) == Some(SECRET_MARKER);
    // A public value: what was typed, else what is saved, else the default.
    let public_value = || -> Option<String> {
        if let Some(t) = st.typed {
            return t.get(&name).map(str::to_owned);
        }
        let v = saved_value.or(f.default.as_ref())?;
        Some(match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        })
    };
    let error = st
        .errors
        .iter()
        .find(|(k, _)| *k == f.key)
        .map(|(_, m)| m.as_str());
    let describe = {
        let mut ids = Vec::new();
        if f.description.is_some() {
            ids.push(format!("h-{}", f.key));
        }
        if error.is_some() {
            ids.push(format!("e-{}", f.key));
        }
        if ids.is_empty() {
            String::new()
        } else {
            format!(" aria-describedby=\"{}\"", ids.join(" "))
        }
    };
    let required = f.required && f.default.is_none() && !(secret_saved && is_secret(f));
    let _ = write!(
        out,
        "<div class=\"field\"><label for=\"{id}\">{}{}</label>",
        esc(&f.label),
        if required {
            " <span class=\"req\" aria-hidden=\"true\">*</span>"
        } else {
            ""
        }
    );
    let req_attr = if required {
        " required aria-required=\"true\""
    } else {
        ""
    };
    let invalid = if error.is_some() {
        " aria-invalid=\"true\""
    } else {
        ""
    };
    match f.kind {
        FieldKind::Boolean => {
            let on = public_value().is_some_and(|v| v == "true");
            let _ = write!(
                out,
                "<input type=\"hidden\" name=\"present.{}\" value=\"1\">\
                 <input id=\"{id}\" name=\"{name}\" type=\"checkbox\" value=\"true\"{}{describe}{invalid}>",
                esc(&f.key),
                if on { " checked" } else { "" }
            );
        }
        FieldKind::Options => {
            let current = public_value().unwrap_or_default();
            let _ = write!(
                out,
                "<select id=\"{id}\" name=\"{name}\"{req_attr}{describe}{invalid}>"
            );
            if !f.required {
                out.push_str("<option value=\"\"></option>");
            }
            for o in &f.options {
                let _ = write!(
                    out,
                    "<option value=\"{0}\"{1}>{0}</option>",
                    esc(o),
                    if *o == current { " selected" } else { "" }
                );
            }
            out.push_str("</select>");
        }
        _ if is_secret(f) => {
            // Never filled: a saved secret shows as a mask in the placeholder only.
            let placeholder = if secret_saved {
                "•••••••• saved: leave empty to keep, type to replace".to_owned()
            } else {
                f.placeholder.clone().unwrap_or_default()
            };
            let _ = write!(
                out,
                "<input id=\"{id}\" name=\"{name}\" type=\"password\" value=\"\" \
                 autocomplete=\"new-password\" spellcheck=\"false\" placeholder=\"{}\"{req_attr}{describe}{invalid}>",
                esc(&placeholder)
            );
            if is_otp_key(f) {
                let _ = write!(
                    out,
                    "<button type=\"button\" class=\"get-code\" data-field=\"{id}\" data-out=\"c-{0}\" \
                     data-saved=\"{1}\">Get code</button>\
                     <output id=\"c-{0}\" class=\"code\" role=\"status\" aria-live=\"polite\"></output>",
                    esc(&f.key),
                    if secret_saved { "yes" } else { "no" }
                );
            }
        }
        FieldKind::Number => {
            let _ = write!(
                out,
                "<input id=\"{id}\" name=\"{name}\" type=\"number\" step=\"{}\" value=\"{}\" placeholder=\"{}\"{req_attr}{describe}{invalid}>",
                if f.integer { "1" } else { "any" },
                esc(&public_value().unwrap_or_default()),
                esc(f.placeholder.as_deref().unwrap_or_default())
            );
        }
        _ => {
            let _ = write!(
                out,
                "<input id=\"{id}\" name=\"{name}\" type=\"text\" value=\"{}\" placeholder=\"{}\" autocomplete=\"off\"{req_attr}{describe}{invalid}>",
                esc(&public_value().unwrap_or_default()),
                esc(f.placeholder.as_deref().unwrap_or_default())
            );
        }
    }
    if let Some(d) = &f.description {
        let _ = write!(
            out,
            "<p class=\"help\" id=\"h-{}\">{}</p>",
            esc(&f.key),
            esc(d)
        );
    }
    if let Some(m) = error {
        let _ = write!(
            out,
            "<p class=\"error\" id=\"e-{}\">{}</p>",
            esc(&f.key),
            esc(m)
        );
    }
    out.push_str("</div>");
}

fn form_html(st: &FormState<'_>, csrf: &str) -> String {
    let def = st.ty.definition();
    let mut out = String::new();
    let title = match st.saved {
        Some(i) => format!("Edit {}", i.name),
        None => format!("New {}", def.display_name),
    };
    let _ = write!(out, "<h1>{}</h1>", esc(&title));
    if let Some(b) = &st.banner {
        out.push_str(b);
    }
    let general: Vec<&(String, String)> = st
        .errors
        .iter()
        .filter(|(k, _)| k.is_empty() || !def.fields.iter().any(|f| f.key == *k))
        .collect();
    if !general.is_empty() || !st.errors.is_empty() {
        out.push_str(
            "<div class=\"error\" role=\"alert\"><p>The credential was not saved:</p><ul>",
        );
        for (k, m) in st.errors {
            let _ = write!(
                out,
                "<li>{}</li>",
                esc(&if k.is_empty() {
                    m.clone()
                } else {
                    format!("{k}: {m}")
                })
            );
        }
        out.push_str("</ul>");
        if st.saved.is_none() {
            out.push_str("<p>Secret fields are never sent back to the page: type them again.</p>");
        }
        out.push_str("</div>");
    }
    let action = match st.saved {
        Some(i) => format!(
            "/ui/credentials/{}/edit?env={}",
            seg(&i.name),
            seg(&i.environment)
        ),
        None => format!("/ui/credentials/new?type={}", seg(&def.name)),
    };
    let _ = write!(
        out,
        "<form method=\"post\" action=\"{}\" class=\"credential\" data-name=\"{}\" data-env=\"{}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&action),
        esc(st.saved.map_or("", |i| i.name.as_str())),
        esc(st.saved.map_or("", |i| i.environment.as_str())),
        esc(csrf)
    );
    let typed = |n: &str| st.typed.and_then(|t| t.get(n)).map(str::to_owned);
    if st.saved.is_none() {
        let _ = write!(
            out,
            "<div class=\"field\"><label for=\"name\">Name <span class=\"req\" aria-hidden=\"true\">*</span></label>\
             <input id=\"name\" name=\"name\" type=\"text\" required aria-required=\"true\" autocomplete=\"off\" value=\"{}\"></div>\
             <div class=\"field\"><label for=\"environment\">Environment</label>\
             <input id=\"environment\" name=\"environment\" type=\"text\" autocomplete=\"off\" value=\"{}\"></div>",
            esc(&typed("name").unwrap_or_default()),
            esc(&typed("environment").unwrap_or_else(|| credvault_store::DEFAULT_ENVIRONMENT.to_owned()))
        );
    } else if let Some(i) = st.saved {
        let _ = write!(
            out,
            "<div class=\"field\"><label for=\"environment\">Environment</label>\
             <input id=\"environment\" name=\"environment\" type=\"text\" autocomplete=\"off\" \
             value=\"{}\" aria-describedby=\"h-environment\">\
             <p class=\"help\" id=\"h-environment\">Changing it moves the credential; its \
             secrets are sealed again for the new environment.</p></div>",
            esc(&typed("environment").unwrap_or_else(|| i.environment.clone()))
        );
    }
    let tags =
        typed("tags").unwrap_or_else(|| st.saved.map_or_else(String::new, |i| i.tags.join(", ")));
    let _ = write!(
        out,
        "<div class=\"field\"><label for=\"tags\">Tags</label>\
         <input id=\"tags\" name=\"tags\" type=\"text\" autocomplete=\"off\" value=\"{}\" aria-describedby=\"h-tags\">\
         <p class=\"help\" id=\"h-tags\">Comma-separated.</p></div>",
        esc(&tags)
    );
    for f in &def.fields {
        field_html(&mut out, st, f);
    }
    out.push_str("<button type=\"submit\">Save</button></form>");
    if let Some(i) = st.saved {
        // Deactivating is confirmed on a page of its own; activating again is one press.
        if i.is_active {
            let _ = write!(
                out,
                "<p>Active: yes. <a href=\"/ui/credentials/{}/deactivate?env={}\">Deactivate…</a></p>",
                seg(&i.name),
                seg(&i.environment)
            );
        } else {
            let _ = write!(
                out,
                "<form method=\"post\" action=\"/ui/credentials/{1}/active?env={2}\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{0}\">\
                 <input type=\"hidden\" name=\"active\" value=\"true\">\
                 <p>Active: <strong>no</strong> (every use is refused). \
                 <button type=\"submit\">Activate</button></p></form>",
                esc(csrf),
                seg(&i.name),
                seg(&i.environment)
            );
        }
        if def.test.is_some() {
            let _ = write!(
                out,
                "<form method=\"post\" action=\"/ui/credentials/{1}/test?env={2}\" class=\"inline\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{0}\"><button type=\"submit\">Test</button></form> ",
                esc(csrf),
                seg(&i.name),
                seg(&i.environment)
            );
        }
        let _ = write!(
            out,
            "<a class=\"danger\" href=\"/ui/credentials/{0}/delete?env={1}\">Delete…</a>",
            seg(&i.name),
            seg(&i.environment)
        );
    }
    out
}

#[derive(Deserialize)]
pub(crate) struct TypeQuery {
    #[serde(rename = "type")]
    type_name: String,
}

#[derive(Deserialize)]
pub(crate) struct EnvQuery {
    env: Option<String>,
}

fn env_of(q: &EnvQuery) -> String {
    q.env
        .clone()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| credvault_store::DEFAULT_ENVIRONMENT.to_owned())
}

fn type_of(s: &Shared, name: &str) -> Result<Arc<CredentialType>, ApiError> {
    s.store
        .registry()
        .get(name)
        .cloned()
        .ok_or_else(|| ApiError::not_found("no such credential type"))
}

/// `GET /ui/credentials/new?type=TYPE`.
pub(crate) async fn new_page(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Extension(u): Extension<UiSession>,
    q: Result<Query<TypeQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let run = || {
        let Query(q) = q.map_err(|_| ApiError::bad_request("query: expected type=TYPE"))?;
        let ty = type_of(&s, &q.type_name)?;
        let st = FormState {
            ty: &ty,
            saved: None,
            typed: None,
            errors: &[],
            banner: None,
        };
        Ok::<_, ApiError>(signed_page(
            &c,
            &u,
            "New credential",
            &form_html(&st, &u.session.csrf),
        ))
    };
    run().unwrap_or_else(refused)
}

/// An authenticator key typed as an `otpauth://` URI goes in as its base32 key (a field of
/// format base32 takes nothing else); anything else as typed.
fn otp_value(f: &FieldDef, v: &str) -> Result<Zeroizing<String>, ApiError> {
    let t = v.trim();
    if f.format == Some(Format::Base32)
        && t.len() > 10
        && t[..10].eq_ignore_ascii_case("otpauth://")
    {
        let otp = credvault_store::totp::Otp::from_uri(t)
            .map_err(|e| ApiError::bad_request(format!("{}: {e}", f.key)))?;
        return Ok(otp.secret().to_base32());
    }
    Ok(Zeroizing::new(v.to_owned()))
}

/// The credential's fields from a form: public fields as typed (empty: unset), secret fields
/// only where typed (on edit an empty one keeps what is saved).
fn fields_from(
    ty: &CredentialType,
    f: &Pairs,
    editing: bool,
) -> Result<serde_json::Value, ApiError> {
    let mut out = serde_json::Map::new();
    for d in &ty.definition().fields {
        if d.kind == FieldKind::Hidden && !d.secret {
            continue;
        }
        let name = format!("f.{}", d.key);
        let v = f.get(&name).unwrap_or_default();
        let value = match d.kind {
            FieldKind::Boolean => {
                if f.get(&format!("present.{}", d.key)).is_none() {
                    continue;
                }
                serde_json::Value::Bool(v == "true")
            }
            _ if is_secret(d) => {
                if v.is_empty() {
                    if editing {
                        serde_json::Value::String(SECRET_MARKER.into())
                    } else {
                        continue;
                    }
                } else {
                    serde_json::Value::String(otp_value(d, v)?.to_string())
                }
            }
            _ if v.trim().is_empty() => {
                if editing {
                    serde_json::Value::Null
                } else {
                    continue;
                }
            }
            FieldKind::Number => match v.trim().parse::<i64>() {
                Ok(n) => serde_json::json!(n),
                Err(_) => match v.trim().parse::<f64>() {
                    Ok(x) if x.is_finite() => serde_json::json!(x),
                    _ => serde_json::Value::String(v.to_owned()),
                },
            },
            _ => serde_json::Value::String(v.to_owned()),
        };
        out.insert(d.key.clone(), value);
    }
    Ok(serde_json::Value::Object(out))
}

fn tags_from(f: &Pairs) -> Vec<String> {
    f.get("tags")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Field errors of a refused save, or `None` for an error that is not about the input.
fn field_errors(e: &StoreError) -> Option<Vec<(String, String)>> {
    match e {
        StoreError::Validation(v) => Some(
            v.errors()
                .iter()
                .map(|x| (x.path.clone(), x.message.clone()))
                .collect(),
        ),
        StoreError::Field { field, reason } => Some(vec![(field.clone(), reason.to_string())]),
        StoreError::NameTaken { .. } | StoreError::Invalid { .. } => {
            Some(vec![(String::new(), e.to_string())])
        }
        _ => None,
    }
}

/// `POST /ui/credentials/new?type=TYPE`.
pub(crate) async fn create(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Extension(u): Extension<UiSession>,
    q: Result<Query<TypeQuery>, axum::extract::rejection::QueryRejection>,
    form: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let run = async {
        let Query(q) = q.map_err(|_| ApiError::bad_request("query: expected type=TYPE"))?;
        let f = change_form(form, &u, &c)?;
        let ty = type_of(&s, &q.type_name)?;
        let name = f.get("name").unwrap_or_default().trim().to_owned();
        let env = match f.get("environment").map(str::trim) {
            Some(e) if !e.is_empty() => e.to_owned(),
            _ => credvault_store::DEFAULT_ENVIRONMENT.to_owned(),
        };
        if !c.key.policy.covers(&name, &env) {
            return Err(ApiError::forbidden(
                "outside_key_scope",
                "this API key does not reach a credential of that name or environment",
            ));
        }
        let mut fields = match fields_from(&ty, &f, false) {
            Ok(v) => v,
            Err(e) => {
                let errs = vec![(String::new(), e.message.clone())];
                let st = FormState {
                    ty: &ty,
                    saved: None,
                    typed: Some(&f),
                    errors: &errs,
                    banner: None,
                };
                return Ok((
                    StatusCode::UNPROCESSABLE_ENTITY,
                    signed_page(&c, &u, "New credential", &form_html(&st, &u.session.csrf)),
                ));
            }
        };
        let new = NewCredential::new(ty.name(), name.as_str(), fields.clone())
            .environment(env)
            .tags(tags_from(&f));
        credvault_store::wipe_json(&mut fields);
        let (s2, c2) = (Arc::clone(&s), c.clone());
        let made = blocking(move || Ok(scope(&s2, &c2)?.create(new))).await?;
        match made {
            Ok(_) => Ok((StatusCode::SEE_OTHER, redirect("/ui/credentials"))),
            Err(e) => match field_errors(&e) {
                Some(errs) => {
                    let st = FormState {
                        ty: &ty,
                        saved: None,
                        typed: Some(&f),
                        errors: &errs,
                        banner: None,
                    };
                    Ok((
                        StatusCode::UNPROCESSABLE_ENTITY,
                        signed_page(&c, &u, "New credential", &form_html(&st, &u.session.csrf)),
                    ))
                }
                None => Err(e.into()),
            },
        }
    };
    match run.await {
        Ok((status, mut r)) => {
            *r.status_mut() = status;
            r
        }
        Err(e) => refused(e),
    }
}

/// Runs `f` off the async worker on the credential named `name` in `env`, found through one
/// scope of the caller's tenant and only if the caller's key reaches it.
async fn on_credential<T: Send + 'static>(
    s: &Arc<Shared>,
    c: &Caller,
    (name, env): (&str, &str),
    f: impl FnOnce(&credvault_store::Scope<'_>, CredentialInfo) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let (s, c, name, env) = (Arc::clone(s), c.clone(), name.to_owned(), env.to_owned());
    blocking(move || {
        let scope = scope(&s, &c)?;
        let info = scope.find(&name, &env)?;
        crate::gateway::covered(&c, &info)?;
        f(&scope, info)
    })
    .await
}

/// A form that changes something: read, its CSRF token checked, the key allowed to write.
fn change_form(
    form: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
    u: &UiSession,
    c: &Caller,
) -> Result<Pairs, ApiError> {
    let f = form_pairs(form)?;
    check_csrf(u, f.get("csrf"))?;
    writer(c)?;
    Ok(f)
}

async fn edit_form(
    s: &Arc<Shared>,
    c: &Caller,
    u: &UiSession,
    (name, env): (String, String),
    banner: Option<String>,
    typed: Option<&Pairs>,
    errors: &[(String, String)],
) -> Result<Response, ApiError> {
    let info = on_credential(s, c, (&name, &env), |_, info| Ok(info)).await?;
    let ty = type_of(s, &info.type_name)?;
    let st = FormState {
        ty: &ty,
        saved: Some(&info),
        typed,
        errors,
        banner,
    };
    Ok(signed_page(
        c,
        u,
        &format!("Edit {}", info.name),
        &form_html(&st, &u.session.csrf),
    ))
}

/// `GET /ui/credentials/{name}/edit?env=ENV`.
pub(crate) async fn edit_page(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Extension(u): Extension<UiSession>,
    Path(name): Path<String>,
    Query(q): Query<EnvQuery>,
) -> Response {
    edit_form(&s, &c, &u, (name, env_of(&q)), None, None, &[])
        .await
        .unwrap_or_else(refused)
}

/// `POST /ui/credentials/{name}/edit?env=ENV`: public fields as typed, secrets only where
/// typed, tags, active.
pub(crate) async fn update(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Extension(u): Extension<UiSession>,
    Path(name): Path<String>,
    Query(q): Query<EnvQuery>,
    form: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let env = env_of(&q);
    let run = async {
        let f = change_form(form, &u, &c)?;
        let info = on_credential(&s, &c, (&name, &env), |_, info| Ok(info)).await?;
        let ty = type_of(&s, &info.type_name)?;
        let mut fields = fields_from(&ty, &f, true)?;
        let mut upd = CredentialUpdate::new()
            .fields(fields.clone())
            .tags(tags_from(&f))
            .expect_version(info.version);
        credvault_store::wipe_json(&mut fields);
        let target = match f.get("environment").map(str::trim) {
            Some(e) if !e.is_empty() && e != env => e.to_owned(),
            _ => env.clone(),
        };
        if target != env {
            if !c.key.policy.covers(&name, &target) {
                return Err(ApiError::forbidden(
                    "outside_key_scope",
                    "this API key does not reach that environment",
                ));
            }
            upd = upd.environment(target.clone());
        }
        let (s2, c2, id) = (Arc::clone(&s), c.clone(), info.id.clone());
        let done = blocking(move || Ok(scope(&s2, &c2)?.update(&id, upd))).await?;
        match done {
            Ok(_) => {
                let banner = "<p class=\"ok\" role=\"status\">Saved.</p>".to_owned();
                edit_form(
                    &s,
                    &c,
                    &u,
                    (name.clone(), target.clone()),
                    Some(banner),
                    None,
                    &[],
                )
                .await
            }
            Err(e) => match field_errors(&e) {
                Some(errs) => {
                    let mut r = edit_form(
                        &s,
                        &c,
                        &u,
                        (name.clone(), env.clone()),
                        None,
                        Some(&f),
                        &errs,
                    )
                    .await?;
                    *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
                    Ok(r)
                }
                None => Err(e.into()),
            },
        }
    };
    run.await.unwrap_or_else(refused)
}

/// `POST /ui/credentials/{name}/test?env=ENV`: runs the type's test, shows the result.
pub(crate) async fn test(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Extension(u): Extension<UiSession>,
    Path(name): Path<String>,
    Query(q): Query<EnvQuery>,
    form: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let env = env_of(&q);
    let run = async {
        change_form(form, &u, &c)?;
        let outcome = on_credential(
            &s,
            &c,
            (&name, &env),
            |scope, info| Ok(scope.test(&info.id)),
        )
        .await?;
        let (status, message) = match outcome {
            Ok(o) => (o.status_str(), o.message),
            // No test for the type, or no tester in this gateway: said on the page.
            Err(StoreError::Unsupported(m)) => ("not run", m),
            Err(e) => return Err(e.into()),
        };
        let class = if status == "ok" { "ok" } else { "error" };
        let banner = format!(
            "<p class=\"{class}\" role=\"status\">Test: {} — {}</p>",
            esc(status),
            esc(&message)
        );
        edit_form(
            &s,
            &c,
            &u,
            (name.clone(), env.clone()),
            Some(banner),
            None,
            &[],
        )
        .await
    };
    run.await.unwrap_or_else(refused)
}

/// A page asking to confirm `what` on the credential `name` in `env`: `question` and
/// `consequence` (HTML, escaped by the caller), a form posting `fields` to `action` (the
/// credential's `/ui/credentials/NAME/` + this), a way back.
struct Confirm {
    title: &'static str,
    question: &'static str,
    consequence: &'static str,
    action: &'static str,
    fields: &'static str,
    button: &'static str,
    back: &'static str,
}

async fn confirm_page(
    s: Arc<Shared>,
    c: Caller,
    u: UiSession,
    (name, env): (String, String),
    k: Confirm,
) -> Response {
    let run = async {
        let info = on_credential(&s, &c, (&name, &env), |_, info| Ok(info)).await?;
        let body = format!(
            "<h1>{q} {n}?</h1><p><strong>{n}</strong> ({t}, environment {e}): {consequence}</p>\
             <form method=\"post\" action=\"/ui/credentials/{sn}/{action}?env={se}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">{fields}\
             <button type=\"submit\" class=\"danger\">{button}</button></form>\
             <p><a href=\"/ui/credentials/{sn}/edit?env={se}\">{back}</a></p>",
            q = k.question,
            n = esc(&info.name),
            t = esc(&info.type_name),
            e = esc(&info.environment),
            consequence = k.consequence,
            sn = seg(&info.name),
            se = seg(&info.environment),
            action = k.action,
            csrf = esc(&u.session.csrf),
            fields = k.fields,
            button = k.button,
            back = k.back,
        );
        Ok::<_, ApiError>(signed_page(&c, &u, k.title, &body))
    };
    run.await.unwrap_or_else(refused)
}

/// `GET /ui/credentials/{name}/deactivate?env=ENV`: the confirmation.
pub(crate) async fn deactivate_page(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Extension(u): Extension<UiSession>,
    Path(name): Path<String>,
    Query(q): Query<EnvQuery>,
) -> Response {
    let env = env_of(&q);
    let k = Confirm {
        title: "Deactivate",
        question: "Deactivate",
        consequence: "every use is refused until it is activated again. Its secrets are kept.",
        action: "active",
        fields: "<input type=\"hidden\" name=\"active\" value=\"false\">",
        button: "Deactivate",
        back: "Keep it active",
    };
    confirm_page(s, c, u, (name, env), k).await
}

/// `POST /ui/credentials/{name}/active?env=ENV` (`active=true|false`).
pub(crate) async fn set_active(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Extension(u): Extension<UiSession>,
    Path(name): Path<String>,
    Query(q): Query<EnvQuery>,
    form: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let env = env_of(&q);
    let run = async {
        let f = change_form(form, &u, &c)?;
        let active = f.get("active") == Some("true");
        on_credential(&s, &c, (&name, &env), move |scope, info| {
            scope.update(&info.id, CredentialUpdate::new().active(active))?;
            Ok(())
        })
        .await?;
        let banner = format!(
            "<p class=\"ok\" role=\"status\">{}</p>",
            if active { "Activated." } else { "Deactivated." }
        );
        edit_form(
            &s,
            &c,
            &u,
            (name.clone(), env.clone()),
            Some(banner),
            None,
            &[],
        )
        .await
    };
    run.await.unwrap_or_else(refused)
}

/// `GET /ui/credentials/{name}/delete?env=ENV`: the confirmation.
pub(crate) async fn delete_page(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Extension(u): Extension<UiSession>,
    Path(name): Path<String>,
    Query(q): Query<EnvQuery>,
) -> Response {
    let env = env_of(&q);
    let k = Confirm {
        title: "Delete",
        question: "Delete",
        consequence: "the credential and its secrets are destroyed. This cannot be undone.",
        action: "delete",
        fields: "",
        button: "Delete for good",
        back: "Keep it",
    };
    confirm_page(s, c, u, (name, env), k).await
}

/// `POST /ui/credentials/{name}/delete?env=ENV`.
pub(crate) async fn delete(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Extension(u): Extension<UiSession>,
    Path(name): Path<String>,
    Query(q): Query<EnvQuery>,
    form: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let env = env_of(&q);
    let run = async {
        change_form(form, &u, &c)?;
        on_credential(&s, &c, (&name, &env), |scope, info| {
            scope.delete(&info.id, None)?;
            Ok(())
        })
        .await?;
        Ok::<_, ApiError>(redirect("/ui/credentials"))
    };
    run.await.unwrap_or_else(refused)
}

// ---------------------------------------------------------------------------------------
// "Get code".

fn code_json(code: &str, valid_for: u64, warning: Option<&str>) -> Response {
    let mut r = Json(serde_json::json!({
        "code": code,
        "valid_for": valid_for,
        "warning": warning,
    }))
    .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn json_error(e: ApiError) -> Response {
    (e.status, Json(serde_json::json!({ "error": e.message }))).into_response()
}

/// Body of `POST /ui/code`: a key as typed in the form (never stored).
#[derive(Deserialize)]
pub(crate) struct TypedKey {
    key: String,
}

impl Drop for TypedKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

/// The code of a key typed while setting up 2FA: base32 as pasted (spaces, any case) or an
/// `otpauth://` URI, through the totp crate; SHA-1, 6 digits, 30 s unless the URI says.
pub(crate) fn typed_code(
    key: &str,
    now: u64,
) -> Result<(String, u64, Option<&'static str>), ApiError> {
    use credvault_store::totp::{Algorithm, Otp, TotpSecret};
    let t = key.trim();
    let otp = if t.len() > 10 && t[..10].eq_ignore_ascii_case("otpauth://") {
        Otp::from_uri(t)
    } else {
        TotpSecret::parse(t).and_then(|secret| Otp::totp(secret, Algorithm::Sha1, 6, 30))
    }
    .map_err(|e| ApiError::bad_request(format!("authenticator key: {e}")))?;
    if matches!(otp.kind(), credvault_store::totp::Kind::Hotp { .. }) {
        return Err(ApiError::bad_request(
            "authenticator key: a counter-based (HOTP) key has no code by time; save it and the vault hands codes out",
        ));
    }
    let code = otp.code_at(now);
    let warning = otp.secret_below_recommended().then_some(
        "This key is shorter than the 128 bits RFC 4226 recommends; it works, and is what the site issued.",
    );
    Ok((code.to_string(), code.remaining_at(now), warning))
}

/// `POST /ui/code`: the code of the key typed in the form.
pub(crate) async fn code_typed(
    Extension(u): Extension<UiSession>,
    headers: HeaderMap,
    body: Result<Json<TypedKey>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let run = || {
        check_csrf(
            &u,
            headers.get("x-csrf-token").and_then(|v| v.to_str().ok()),
        )?;
        let b = crate::gateway::json_body(body)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (code, left, warning) = typed_code(&b.key, now)?;
        Ok::<_, ApiError>(code_json(&code, left, warning))
    };
    run().unwrap_or_else(json_error)
}

/// `POST /ui/credentials/{name}/code?env=ENV`: the saved key's current code (the key never
/// comes back).
pub(crate) async fn code_saved(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Extension(u): Extension<UiSession>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<EnvQuery>,
) -> Response {
    let env = env_of(&q);
    let run = async {
        check_csrf(
            &u,
            headers.get("x-csrf-token").and_then(|v| v.to_str().ok()),
        )?;
        let code = on_credential(&s, &c, (&name, &env), |scope, info| {
            Ok(scope.totp_code(&info.id, Some("ui"))?)
        })
        .await?;
        let left =
            u64::try_from((code.expires_at - crate::gateway::now_ms()).max(0) / 1000).unwrap_or(0);
        Ok::<_, ApiError>(code_json(code.expose_secret(), left, None))
    };
    run.await.unwrap_or_else(json_error)
}

// ---------------------------------------------------------------------------------------
// Static files.

const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");

pub(crate) async fn app_js() -> Response {
    static_file(APP_JS, "text/javascript; charset=utf-8")
}

pub(crate) async fn app_css() -> Response {
    static_file(APP_CSS, "text/css; charset=utf-8")
}

fn static_file(body: &'static str, ty: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ty));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_every_character_that_opens_markup_or_closes_an_attribute() {
        assert_eq!(
            esc(r#"<a href="x" onclick='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(seg("app/db x"), "app%2Fdb%20x");
    }

    #[test]
    fn typed_keys_are_read_leniently_and_codes_match_rfc_6238() {
        // RFC 6238 appendix B, SHA-1: the ASCII key "12345678901234567890" at T = 59 s.
        let key = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
        let (code, left, warn) = typed_code(key, 59).unwrap();
        assert_eq!((code.as_str(), left, warn), ("287082", 1, None));
        let spaced = "gezd gnbv gy3t qojq gezd gnbv gy3t qojq";
        assert_eq!(typed_code(spaced, 59).unwrap().0, "287082");
        let uri = format!("otpauth://totp/Acme:bot?secret={key}&issuer=Acme");
        assert_eq!(typed_code(&uri, 59).unwrap().0, "287082");
        // A 12-character key works, with a warning.
        let (_, _, warn) = typed_code("JBSWY3DPEHPK", 59).unwrap();
        assert!(warn.is_some());
        assert!(typed_code("not base32!", 59).is_err());
    }

    #[test]
    fn a_session_is_bound_to_its_host_and_ends() {
        let s = Sessions::default();
        let (cookie, _) = s.create("abc", "acme.localhost").unwrap();
        assert!(s.get(&cookie, "acme.localhost").is_some());
        assert!(s.get(&cookie, "globex.localhost").is_none());
        assert!(s.get("forged", "acme.localhost").is_none());
        s.remove(&cookie);
        assert!(s.get(&cookie, "acme.localhost").is_none());
    }
}
