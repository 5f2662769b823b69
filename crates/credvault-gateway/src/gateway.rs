//! The router: host to tenant, API key, rate limits, the routes, and one audit record per
//! request.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use base64::Engine as _;
use credvault_store::audit::{Action, Details, EventId, Events, Outcome, Query as AuditQuery};
use credvault_store::{wipe_json, CredentialUpdate, NewCredential};
use credvault_store::{AuditEvent, CredentialId, ListFilter, Store, TenantId};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use tower::ServiceExt as _;

use crate::apikey::{ApiScope, KeyError, KeyInfo, KeyStore, RateLimit};
use crate::connect_api;
use crate::error::ApiError;
use crate::proxy::UpstreamConfig;
use crate::server::ConnInfo;
use crate::session_api;
use crate::ui;
use crate::vault_api;
use crate::vault_kv;
use crate::vault_totp;
use crate::vault_transit;
use credvault_dlp::Scanner;

/// Longest `Host` name accepted.
const MAX_HOST_LEN: usize = 253;
/// Most fields one reveal may name.
const MAX_REVEAL_FIELDS: usize = 64;
/// Longest `service` label.
const MAX_SERVICE_LEN: usize = 128;

/// The gateway's settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// Host name (lower-case, no port) to the one tenant it serves.
    pub hosts: BTreeMap<String, TenantId>,
    /// Proxies whose `X-Forwarded-For` is believed (their own address is the peer's), as
    /// addresses or ranges; from any other peer the header is ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Rate limit of a key without its own (default 50/s).
    pub key_rate: RateLimit,
    /// Rate limit of a whole tenant (default 500/s).
    pub tenant_rate: RateLimit,
    /// Per-tenant limits instead of `tenant_rate`.
    pub tenant_rates: BTreeMap<TenantId, RateLimit>,
    /// Largest request body (default 1 MiB).
    pub body_limit: usize,
    /// Longest time a request may take (default 30 s); for the proxy, until the upstream's
    /// answer starts (its body then streams for up to [`UpstreamConfig::stream_timeout`]).
    pub request_timeout: Duration,
    /// Where the proxy may connect and whom it trusts.
    pub upstream: UpstreamConfig,
    /// DLP detectors of the proxy, per tenant; tenants without their own get `dlp_default`.
    pub dlp: BTreeMap<TenantId, Arc<Scanner>>,
    /// DLP detectors of tenants without their own: the built-in ones with their default
    /// actions (secrets, cards and SSNs redacted; email addresses and phone numbers reported).
    pub dlp_default: Arc<Scanner>,
    /// Tenants whose credentials come from an external source (fetched per request, never
    /// stored): their reveal and proxy routes name credentials by the source's names.
    pub sources: BTreeMap<TenantId, crate::source::SharedSource>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            hosts: BTreeMap::new(),
            trusted_proxies: Vec::new(),
            key_rate: RateLimit {
                count: 50,
                per_seconds: 1,
            },
            tenant_rate: RateLimit {
                count: 500,
                per_seconds: 1,
            },
            tenant_rates: BTreeMap::new(),
            body_limit: 1 << 20,
            request_timeout: Duration::from_secs(30),
            upstream: UpstreamConfig::default(),
            dlp: BTreeMap::new(),
            dlp_default: Arc::new(Scanner::builtin()),
            sources: BTreeMap::new(),
        }
    }
}

impl GatewayConfig {
    /// Serves `tenant` on `host` (case-insensitive; no port).
    ///
    /// # Errors
    /// `host` is not a valid host name.
    pub fn host(mut self, host: &str, tenant: TenantId) -> Result<Self, KeyError> {
        let h = normalise_host(host).ok_or_else(|| KeyError::Invalid {
            what: "host",
            reason: "expected a host name or address without a port".into(),
        })?;
        self.hosts.insert(h, tenant);
        Ok(self)
    }

    /// Believes `X-Forwarded-For` from `proxy`.
    pub fn trust_proxy(mut self, proxy: IpAddr) -> Self {
        self.trusted_proxies.push(ipnet::IpNet::from(proxy));
        self
    }

    /// Believes `X-Forwarded-For` from any address in `range` (`10.0.0.0/8`, say).
    pub fn trust_proxy_range(mut self, range: ipnet::IpNet) -> Self {
        self.trusted_proxies.push(range.trunc());
        self
    }

    /// Sets the default per-key rate limit.
    pub fn key_rate(mut self, r: RateLimit) -> Self {
        self.key_rate = r;
        self
    }

    /// Sets the default per-tenant rate limit.
    pub fn tenant_rate(mut self, r: RateLimit) -> Self {
        self.tenant_rate = r;
        self
    }

    /// Sets one tenant's rate limit.
    pub fn tenant_rate_for(mut self, t: TenantId, r: RateLimit) -> Self {
        self.tenant_rates.insert(t, r);
        self
    }

    /// Sets the body limit.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Sets the request time limit.
    pub fn request_timeout(mut self, t: Duration) -> Self {
        self.request_timeout = t;
        self
    }

    /// Lets the proxy reach addresses in `range` (loopback, private or link-local ones are
    /// refused otherwise; reserved ones always are).
    pub fn allow_upstream(mut self, range: ipnet::IpNet) -> Self {
        self.upstream.allow.push(range.trunc());
        self
    }

    /// Trusts `ca` (DER) for upstream TLS, beside the system's authorities.
    pub fn upstream_root(mut self, ca: rustls_pki_types::CertificateDer<'static>) -> Self {
        self.upstream.extra_roots.push(ca);
        self
    }

    /// Sets every upstream setting at once.
    pub fn upstream(mut self, u: UpstreamConfig) -> Self {
        self.upstream = u;
        self
    }

    /// Sets one tenant's DLP detectors for the proxy.
    pub fn dlp_for(mut self, t: TenantId, scanner: Scanner) -> Self {
        self.dlp.insert(t, Arc::new(scanner));
        self
    }

    /// Backs `tenant` by an external source: its credentials are fetched per request and
    /// never stored (reveal and proxy; the store's other routes see none).
    pub fn source(mut self, tenant: TenantId, source: crate::source::SharedSource) -> Self {
        self.sources.insert(tenant, source);
        self
    }

    /// Sets the DLP detectors of tenants without their own.
    pub fn dlp_default(mut self, scanner: Scanner) -> Self {
        self.dlp_default = Arc::new(scanner);
        self
    }
}

/// Lower-case host without a port, or `None` if it is not a plausible host name or address.
pub(crate) fn normalise_host(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let host = if let Some(rest) = raw.strip_prefix('[') {
        // [v6]:port
        let end = rest.find(']')?;
        let after = &rest[end + 1..];
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        &raw[..end + 2]
    } else {
        match raw.rsplit_once(':') {
            // Outside brackets a colon only separates the port (found by the gateway_parsers
            // fuzz target: `a:b:43` read as the host `a:b`).
            Some((h, _)) if h.contains(':') => return None,
            Some((h, p)) if is_port(p) => h,
            Some(_) => return None,
            None => raw,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    // No empty label (`a..b`, `.a`, `a..`: the last found by the gateway_parsers fuzz target).
    if host.starts_with('.') || host.ends_with('.') || host.contains("..") {
        return None;
    }
    if host.is_empty()
        || host.len() > MAX_HOST_LEN
        || !host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'[' | b']' | b':')
        })
    {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

fn quota(r: RateLimit) -> Quota {
    let count = NonZeroU32::new(r.count).unwrap_or(NonZeroU32::MIN);
    let period = Duration::from_secs(u64::from(r.per_seconds.max(1))) / r.count.max(1);
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(count))
        .allow_burst(count)
}

/// Who is asking, decided before the route runs.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub(crate) tenant: TenantId,
    pub(crate) key: KeyInfo,
    pub(crate) source_ip: String,
    pub(crate) host: String,
    pub(crate) request_id: String,
}

impl Caller {
    fn actor(&self) -> String {
        format!("apikey:{}", self.key.id)
    }

    pub(crate) fn require(&self, scope: ApiScope) -> Result<(), ApiError> {
        if self.key.policy.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "insufficient_scope",
                format!("this API key lacks the `{scope}` scope"),
            ))
        }
    }
}

/// What the audit record of a request needs from the gate.
struct Seen {
    tenant: String,
    key: Option<String>,
    source_ip: String,
    host: Option<String>,
    request_id: String,
}

pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) keys: Arc<KeyStore>,
    pub(crate) cfg: GatewayConfig,
    pub(crate) sessions: crate::ui::Sessions,
    pub(crate) upstream: crate::proxy::UpstreamClient,
    key_limiter: DefaultKeyedRateLimiter<String>,
    tenant_limiter: DefaultKeyedRateLimiter<String>,
    own_limits: Mutex<HashMap<String, (RateLimit, Arc<DefaultDirectRateLimiter>)>>,
    tenant_own: HashMap<String, DefaultDirectRateLimiter>,
    clock: DefaultClock,
    audit_reader: OnceLock<AuditReader>,
    metrics: crate::metrics::Metrics,
    pub(crate) services: OnceLock<crate::session_api::Services>,
}

/// Reads the vault's audit events matching a query (for `GET .../audit-logs`).
pub type AuditReader =
    Arc<dyn Fn(&AuditQuery) -> Result<Events, credvault_store::StoreError> + Send + Sync>;

/// The gateway: a store, a key store and settings; [`router`](Self::router) makes the axum
/// router to serve (with [`serve`](crate::serve) or any hyper server that inserts a
/// [`ConnInfo`] into each request's extensions).
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("hosts", &self.shared.cfg.hosts.len())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway over `store` with API keys from `keys`.
    pub fn new(store: Store, keys: Arc<KeyStore>, cfg: GatewayConfig) -> Self {
        let tenant_own = cfg
            .tenant_rates
            .iter()
            .map(|(t, r)| (t.as_str().to_owned(), RateLimiter::direct(quota(*r))))
            .collect();
        Self {
            shared: Arc::new(Shared {
                key_limiter: RateLimiter::keyed(quota(cfg.key_rate)),
                tenant_limiter: RateLimiter::keyed(quota(cfg.tenant_rate)),
                own_limits: Mutex::new(HashMap::new()),
                tenant_own,
                clock: DefaultClock::default(),
                audit_reader: OnceLock::new(),
                services: OnceLock::new(),
                metrics: crate::metrics::Metrics::new(),
                upstream: crate::proxy::client(&cfg.upstream),
                sessions: crate::ui::Sessions::default(),
                store,
                keys,
                cfg,
            }),
        }
    }

    /// Serves `GET /api/credentials/{id}/audit-logs` from `reader` (`Vault::audit_events`, say);
    /// without one that route answers 501. Set once; a second call changes nothing.
    pub fn set_audit_reader(&self, reader: AuditReader) {
        let _ = self.shared.audit_reader.set(reader);
    }

    /// Serves browser sessions, leases and two-factor codes (`/api/sessions`,
    /// `/api/credentials/{id}/session`, `.../leases`, `.../tfa/...`) from `sessions` and `tfa`,
    /// and Twilio's inbound-SMS webhook (`POST /tfa/sms/twilio`) when `twilio_auth_token` is
    /// given; without this call those routes answer 501. Set once; a second call changes
    /// nothing.
    pub fn set_sessions(
        &self,
        sessions: Arc<credvault_session::Sessions>,
        tfa: Arc<credvault_tfa::Tfa>,
        twilio_auth_token: Option<zeroize::Zeroizing<Vec<u8>>>,
    ) {
        let _ = self.shared.services.set(crate::session_api::Services {
            sessions,
            tfa,
            twilio_token: twilio_auth_token,
        });
    }

    /// The router: every route, the gate before them, limits around them.
    pub fn router(&self) -> Router {
        let api: Router<Arc<Shared>> = Router::new()
            .route("/api/credentials/types", get(types))
            .route("/api/credentials/types/{id}", get(type_one))
            .route("/api/credentials", get(list).post(create))
            .route("/api/credentials/data-key", post(data_key))
            .route("/api/credentials/sealed", post(create_sealed))
            .route(
                "/api/credentials/{id}",
                get(get_one).put(update).delete(delete_one),
            )
            .route("/api/credentials/{id}/reveal", post(reveal))
            .route("/api/credentials/{id}/totp", post(totp))
            .route("/api/credentials/{id}/test", post(test_one))
            .route("/api/credentials/{id}/audit-logs", get(audit_logs))
            .route("/api/sessions", get(session_api::list_states))
            .route(
                "/api/credentials/{id}/session",
                get(session_api::load_state)
                    .put(session_api::save_state)
                    .delete(session_api::remove_state),
            )
            .route(
                "/api/credentials/{id}/session-config",
                get(session_api::get_config).put(session_api::put_config),
            )
            .route("/api/credentials/{id}/leases", post(session_api::acquire))
            .route(
                "/api/credentials/{id}/leases/{lease}/renew",
                post(session_api::renew),
            )
            .route(
                "/api/credentials/{id}/leases/{lease}",
                axum::routing::delete(session_api::release),
            )
            .route(
                "/api/credentials/{id}/tfa/address",
                get(session_api::tfa_address),
            )
            .route(
                "/api/credentials/{id}/tfa/code",
                post(session_api::tfa_code),
            )
            .route("/tfa/sms/twilio", post(session_api::twilio_sms))
            .route("/proxy/{credential}", any(crate::proxy::proxy))
            .route("/proxy/{credential}/", any(crate::proxy::proxy))
            .route("/proxy/{credential}/{*path}", any(crate::proxy::proxy))
            .route("/v1/auth/token/lookup-self", get(vault_api::lookup_self))
            .route(
                "/v1/secret/data/{*path}",
                get(vault_kv::read)
                    .post(vault_kv::write)
                    .put(vault_kv::write)
                    .delete(vault_kv::delete_current),
            )
            .route(
                "/v1/secret/delete/{*path}",
                post(vault_kv::delete_versions).put(vault_kv::delete_versions),
            )
            .route(
                "/v1/secret/undelete/{*path}",
                post(vault_kv::undelete).put(vault_kv::undelete),
            )
            .route("/v1/secret/metadata", get(vault_api::kv_metadata))
            .route("/v1/secret/metadata/", get(vault_api::kv_metadata))
            .route(
                "/v1/secret/metadata/{*path}",
                get(vault_api::kv_metadata)
                    .post(vault_kv::write_metadata)
                    .put(vault_kv::write_metadata)
                    .delete(vault_api::kv_metadata_delete),
            )
            .route("/v1/vaults", get(connect_api::list_vaults))
            .route("/v1/vaults/{id}", get(connect_api::get_vault))
            .route("/v1/vaults/{id}/items", get(connect_api::list_items))
            .route("/v1/vaults/{id}/items/{item}", get(connect_api::get_item))
            .route("/v1/transit/keys", get(vault_transit::list_keys))
            .route(
                "/v1/transit/keys/{name}",
                get(vault_transit::read_key)
                    .post(vault_transit::create_key)
                    .put(vault_transit::create_key)
                    .delete(vault_transit::delete_key),
            )
            .route(
                "/v1/transit/keys/{name}/config",
                post(vault_transit::configure).put(vault_transit::configure),
            )
            .route(
                "/v1/transit/keys/{name}/rotate",
                post(vault_transit::rotate).put(vault_transit::rotate),
            )
            .route(
                "/v1/transit/encrypt/{name}",
                post(vault_transit::encrypt).put(vault_transit::encrypt),
            )
            .route(
                "/v1/transit/decrypt/{name}",
                post(vault_transit::decrypt).put(vault_transit::decrypt),
            )
            .route(
                "/v1/transit/rewrap/{name}",
                post(vault_transit::rewrap).put(vault_transit::rewrap),
            )
            .route(
                "/v1/transit/datakey/{kind}/{name}",
                post(vault_transit::datakey).put(vault_transit::datakey),
            )
            .route("/v1/totp/keys", get(vault_totp::list_keys))
            .route(
                "/v1/totp/keys/{name}",
                get(vault_totp::read_key)
                    .post(vault_totp::create_key)
                    .put(vault_totp::create_key)
                    .delete(vault_totp::delete_key),
            )
            .route(
                "/v1/totp/code/{name}",
                get(vault_totp::generate_code)
                    .post(vault_totp::validate_code)
                    .put(vault_totp::validate_code),
            )
            .route(
                "/v1/secret/destroy/{*path}",
                post(vault_kv::destroy).put(vault_kv::destroy),
            );
        let ui = Router::new()
            .route("/ui", get(ui::root))
            .route("/ui/", get(ui::root))
            .route("/ui/login", get(ui::login_page).post(ui::login))
            .route("/ui/logout", post(ui::logout))
            .route("/ui/credentials", get(ui::list))
            .route("/ui/credentials/new", get(ui::new_page).post(ui::create))
            .route(
                "/ui/credentials/{name}/edit",
                get(ui::edit_page).post(ui::update),
            )
            .route("/ui/credentials/{name}/test", post(ui::test))
            .route(
                "/ui/credentials/{name}/deactivate",
                get(ui::deactivate_page),
            )
            .route("/ui/credentials/{name}/active", post(ui::set_active))
            .route(
                "/ui/credentials/{name}/delete",
                get(ui::delete_page).post(ui::delete),
            )
            .route("/ui/credentials/{name}/code", post(ui::code_saved))
            .route("/ui/code", post(ui::code_typed))
            .route("/ui/static/app.js", get(ui::app_js))
            .route("/ui/static/app.css", get(ui::app_css))
            .layer(middleware::map_response(ui::headers));
        let api = api.merge(ui);
        let inner = Router::new()
            .route("/v1/sys/health", get(vault_api::health))
            .route("/v1/sys/seal-status", get(vault_api::seal_status))
            .route("/v1/sys/init", get(vault_api::init_status))
            .route("/heartbeat", get(connect_api::heartbeat))
            .route("/health", get(connect_api::health))
            .route("/metrics", get(metrics))
            .route("/openapi.json", get(openapi))
            .merge(api)
            .fallback(fallback)
            .with_state(Arc::clone(&self.shared))
            .layer(DefaultBodyLimit::max(self.shared.cfg.body_limit))
            .layer(middleware::from_fn_with_state(
                Arc::clone(&self.shared),
                gate,
            ));
        // A layer on a router runs after routing; Vault's LIST verb has to become a GET
        // before it, so the whole router sits behind a rewrite.
        Router::new().fallback_service(inner.map_request(vault_list_to_get))
    }
}

/// Vault's `LIST` verb as Vault itself treats it: a GET with `list=true`.
fn vault_list_to_get(mut req: Request) -> Request {
    if req.method().as_str() == "LIST" {
        let path = req.uri().path();
        let pq = match req.uri().query() {
            Some(q) => format!("{path}?{q}&list=true"),
            None => format!("{path}?list=true"),
        };
        if let Ok(uri) = pq.parse() {
            *req.uri_mut() = uri;
            *req.method_mut() = axum::http::Method::GET;
        }
    }
    req
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let mut resp = s.metrics.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

/// The native API's OpenAPI 3.1 document (also `docs/openapi.json`).
pub const OPENAPI: &str = include_str!("../openapi.json");

async fn openapi() -> Response {
    let mut resp = OPENAPI.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

async fn fallback(uri: axum::http::Uri) -> Response {
    Shape::of(uri.path()).error(ApiError::not_found("no such route"))
}

/// Which API a path belongs to, for the shape of its errors.
#[derive(Clone, Copy)]
enum Shape {
    Native,
    Vault,
    Connect,
    Ui,
}

impl Shape {
    fn of(path: &str) -> Self {
        if path == "/ui" || path.starts_with("/ui/") {
            Self::Ui
        } else if path == "/v1/vaults" || path.starts_with("/v1/vaults/") {
            Self::Connect
        } else if path.starts_with("/v1/") {
            Self::Vault
        } else {
            Self::Native
        }
    }

    fn error(self, e: ApiError) -> Response {
        match self {
            Self::Native => e.into_response(),
            Self::Vault => vault_api::vault_error(e),
            Self::Connect => connect_api::connect_error(e),
            Self::Ui => ui::refused(e),
        }
    }
}

fn header_str<'h>(h: &'h HeaderMap, name: &header::HeaderName) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The key presented: `Authorization: Bearer KEY` or `X-Api-Key: KEY`.
fn presented_key(h: &HeaderMap) -> Option<&str> {
    if let Some(v) = header_str(h, &header::AUTHORIZATION) {
        let (scheme, rest) = v.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim());
    }
    h.get("x-vault-token")
        .or_else(|| h.get("x-api-key"))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The key presented to the proxy: where [`presented_key`] looks, or in whichever header
/// the upstream's clients put their key (`api-key`, `x-goog-api-key`, ...): the first value
/// holding `cvk_`, from there to the next space.
fn proxied_key(h: &HeaderMap) -> Option<&str> {
    if let Some(k) = presented_key(h).filter(|k| k.starts_with(crate::apikey::KEY_PREFIX)) {
        return Some(k);
    }
    h.values().find_map(|v| {
        let v = v.to_str().ok()?;
        let at = v.find(crate::apikey::KEY_PREFIX)?;
        v[at..].split_ascii_whitespace().next()
    })
}

impl Shared {
    /// The proxy's DLP detectors for `tenant`.
    pub(crate) fn dlp_for(&self, tenant: &TenantId) -> Arc<Scanner> {
        Arc::clone(self.cfg.dlp.get(tenant).unwrap_or(&self.cfg.dlp_default))
    }

    fn source_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let trusted = |a: &IpAddr| self.cfg.trusted_proxies.iter().any(|n| n.contains(a));
        if !trusted(&peer) {
            return peer;
        }
        // The last address not itself a trusted proxy, from the right.
        let mut ip = peer;
        if let Some(v) = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            for part in v.rsplit(',') {
                match part.trim().parse::<IpAddr>() {
                    Ok(a) => {
                        ip = a;
                        if !trusted(&a) {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        ip
    }

    pub(crate) fn check_rate(&self, key: &KeyInfo) -> Result<(), ApiError> {
        let wait = |nu: governor::NotUntil<<DefaultClock as Clock>::Instant>| {
            let d = nu.wait_time_from(self.clock.now());
            ApiError::rate_limited(d.as_secs() + u64::from(d.subsec_nanos() > 0))
        };
        let tenant = key.policy.tenant.as_str();
        let refused = |kind: &'static str| {
            move |nu| {
                self.metrics.rate_limited(kind);
                wait(nu)
            }
        };
        match self.tenant_own.get(tenant) {
            Some(l) => l.check().map_err(refused("tenant"))?,
            None => self
                .tenant_limiter
                .check_key(&tenant.to_owned())
                .map_err(refused("tenant"))?,
        }
        match key.policy.rate_limit {
            Some(r) => {
                let limiter = {
                    let mut own = self.own_limits.lock().unwrap_or_else(|p| p.into_inner());
                    match own.get(&key.id) {
                        Some((have, l)) if *have == r => Arc::clone(l),
                        _ => {
                            let l = Arc::new(RateLimiter::direct(quota(r)));
                            own.insert(key.id.clone(), (r, Arc::clone(&l)));
                            l
                        }
                    }
                };
                limiter.check().map_err(refused("key"))
            }
            None => self.key_limiter.check_key(&key.id).map_err(refused("key")),
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Everything before the route: host to tenant, key, tenant match, rate limits; after it, the
/// request's audit record. A response goes out only once its record is written.
async fn gate(State(s): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = EventId::random().to_string();
    // Extension methods are allowed by HTTP; a long one is cut in the record.
    let method: String = req.method().as_str().chars().take(16).collect();
    let conn = req.extensions().get::<ConnInfo>().cloned();
    let peer = conn
        .as_ref()
        .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.peer.ip());
    let source_ip = s.source_ip(peer, req.headers()).to_string();
    // The gate is a router layer, which axum runs after routing: the route that matched is
    // known here, even for a request refused before its handler.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let shape = Shape::of(req.uri().path());

    // Liveness, metrics and the API document are answered without a key, a host or a record:
    // probes and scrapes every few seconds must not fill the audit log.
    if matches!(
        req.uri().path(),
        "/v1/sys/health"
            | "/v1/sys/seal-status"
            | "/v1/sys/init"
            | "/metrics"
            | "/openapi.json"
            | "/heartbeat"
            | "/health"
    ) || ui::is_static(req.uri().path())
    {
        return next.run(req).await;
    }

    let raw_host = header_str(req.headers(), &header::HOST)
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()));
    let host = raw_host.as_deref().and_then(normalise_host);
    let mut seen = Seen {
        tenant: String::new(),
        key: None,
        source_ip,
        host: host.clone(),
        request_id: request_id.clone(),
    };

    let admitted = if matches!(shape, Shape::Ui) {
        admit_ui(&s, &mut req, host, conn.as_ref(), &mut seen).await
    } else if req.uri().path() == "/tfa/sms/twilio" {
        // Twilio presents no API key: the handler verifies its signature; the host still
        // names the one tenant whose numbers it may reach.
        admit_host(&s, host, conn.as_ref(), &mut seen).map(|(tenant, _)| {
            req.extensions_mut().insert(crate::session_api::Webhook {
                tenant,
                tls: conn.as_ref().is_some_and(|c| c.tls),
            });
            None
        })
    } else {
        let presented = if req.uri().path().starts_with("/proxy/") {
            proxied_key(req.headers())
        } else {
            presented_key(req.headers())
        }
        .map(str::to_owned);
        admit(&s, presented, host, conn.as_ref(), &mut seen)
            .await
            .map(Some)
    };
    // A request the gate refused is a denial, whatever its status (the setup page answers a
    // missing session with a redirect to sign in).
    let refused_at_gate = admitted.is_err();
    let mut resp = match admitted {
        Ok(caller) => {
            if let Some(caller) = caller {
                req.extensions_mut().insert(caller);
            }
            match tokio::time::timeout(s.cfg.request_timeout, next.run(req)).await {
                Ok(r) => r,
                Err(_) => ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    "the request took longer than the gateway allows",
                )
                .into_response(),
            }
        }
        Err(e) => shape.error(e),
    };

    if let Some(ui::SignedIn(id)) = resp.extensions().get::<ui::SignedIn>() {
        seen.key = Some(id.clone());
    }
    let status = resp.status().as_u16();
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let outcome = match status {
        _ if refused_at_gate => Outcome::Denied,
        200..=399 => Outcome::Success,
        401 | 403 | 421 | 429 => Outcome::Denied,
        _ => Outcome::Failure,
    };
    let actor = seen
        .key
        .as_ref()
        .map_or_else(|| "anonymous".to_owned(), |k| format!("apikey:{k}"));
    let mut event = AuditEvent::new(seen.tenant.as_str(), actor, Action::Request)
        .with_source_ip(seen.source_ip.as_str())
        .with_request_id(seen.request_id.as_str())
        .with_outcome(outcome)
        .with_details(Details::Request {
            method: method.clone(),
            route: route.clone(),
            status,
            latency_us,
            api_key: seen.key.clone(),
        });
    if let Some(h) = &seen.host {
        event = event.with_client_host(h.as_str());
    }
    let store = s.store.clone();
    let recorded = run_blocking(move || store.record_event(&event)).await;
    if !matches!(recorded, Ok(Ok(()))) {
        tracing::error!(request_id = %request_id, "audit record failed; response withheld");
        s.metrics.audit_failure();
        resp = shape.error(ApiError::audit_unavailable());
    }
    let method_label = match method.as_str() {
        m @ ("GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS") => m,
        _ => "other",
    };
    s.metrics.request(
        &route,
        method_label,
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    tracing::info!(
        request_id = %request_id,
        method = %method,
        route = %route,
        status,
        latency_us,
        source_ip = %seen.source_ip,
        host = seen.host.as_deref().unwrap_or(""),
        api_key = seen.key.as_deref().unwrap_or(""),
        "request"
    );
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// The setup page's admission: the sign-in page needs only a known host; every other page a
/// live session of a key of the host's tenant that may use the page (checked again on every
/// request: a key revoked or expired since ends its sessions).
async fn admit_ui(
    s: &Arc<Shared>,
    req: &mut Request,
    host: Option<String>,
    conn: Option<&ConnInfo>,
    seen: &mut Seen,
) -> Result<Option<Caller>, ApiError> {
    let (tenant, host) = admit_host(s, host, conn, seen)?;
    let tls = conn.is_some_and(|c| c.tls);
    if ui::is_public(req.uri().path()) {
        req.extensions_mut()
            .insert(ui::Visitor { tenant, host, tls });
        return Ok(None);
    }
    let signed_out = || ApiError::unauthenticated("sign in first");
    let session = ui::cookie(req.headers(), ui::COOKIE)
        .and_then(|c| s.sessions.get(c, &host))
        .ok_or_else(signed_out)?;
    seen.key = Some(session.key_id.clone());
    let keys = Arc::clone(&s.keys);
    let (id, now) = (session.key_id.clone(), now_ms());
    let key = run_blocking(move || keys.live(&id, now))
        .await?
        .map_err(|_| signed_out())?;
    if key.policy.tenant != tenant || !ui::may_use(&key) {
        return Err(signed_out());
    }
    s.check_rate(&key)?;
    req.extensions_mut().insert(ui::UiSession { session, tls });
    Ok(Some(Caller {
        tenant,
        key,
        source_ip: seen.source_ip.clone(),
        host,
        request_id: seen.request_id.clone(),
    }))
}

/// The tenant of the request's host (and, over TLS, the same name in the handshake).
fn admit_host(
    s: &Arc<Shared>,
    host: Option<String>,
    conn: Option<&ConnInfo>,
    seen: &mut Seen,
) -> Result<(TenantId, String), ApiError> {
    let misdirected = |m: &str| ApiError::new(StatusCode::MISDIRECTED_REQUEST, "unknown_host", m);
    let host = host.ok_or_else(|| misdirected("the request names no valid host"))?;
    let tenant = s
        .cfg
        .hosts
        .get(&host)
        .cloned()
        .ok_or_else(|| misdirected("this gateway serves no tenant on that host"))?;
    seen.tenant = tenant.as_str().to_owned();
    // Over TLS the name in the handshake must be the Host: a connection opened for one
    // tenant's name cannot carry another tenant's requests.
    if let Some(sni) = conn.and_then(|c| c.sni.as_deref()) {
        if normalise_host(sni).as_deref() != Some(host.as_str()) {
            return Err(misdirected(
                "the Host differs from the TLS server name of this connection",
            ));
        }
    }
    Ok((tenant, host))
}

async fn admit(
    s: &Arc<Shared>,
    presented: Option<String>,
    host: Option<String>,
    conn: Option<&ConnInfo>,
    seen: &mut Seen,
) -> Result<Caller, ApiError> {
    let (tenant, host) = admit_host(s, host, conn, seen)?;
    let Some(text) = presented else {
        return Err(ApiError::unauthenticated(
            "an API key is required: Authorization: Bearer <key>",
        ));
    };
    let keys = Arc::clone(&s.keys);
    let now = now_ms();
    let ip = seen.source_ip.clone();
    let key = run_blocking(move || {
        let info = keys.authenticate(&text, now)?;
        let _ = keys.note_use(&info, now, &ip);
        Ok::<_, KeyError>(info)
    })
    .await?;
    let key = match key {
        Ok(k) => k,
        Err(e) => {
            if let KeyError::Revoked { id }
            | KeyError::Expired { id }
            | KeyError::Integrity { id } = &e
            {
                seen.key = Some(id.clone());
            }
            return Err(e.into());
        }
    };
    seen.key = Some(key.id.clone());
    if key.policy.tenant != tenant {
        return Err(ApiError::forbidden(
            "wrong_tenant",
            "this API key belongs to another tenant than this host's",
        ));
    }
    s.check_rate(&key)?;
    Ok(Caller {
        tenant,
        key,
        source_ip: seen.source_ip.clone(),
        host,
        request_id: seen.request_id.clone(),
    })
}

/// Runs blocking work (a store call: SQLite, the audit log's write) without holding up other
/// tasks. On a multi-threaded runtime it runs right here, after the worker hands its other
/// tasks to another thread (`block_in_place`): no hop to the blocking pool and back, which
/// cost more than the work itself. On a current-thread runtime it goes to the blocking pool.
async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => Ok(tokio::task::block_in_place(f)),
        _ => tokio::task::spawn_blocking(f)
            .await
            .map_err(|_| ApiError::internal()),
    }
}

/// Runs a store call (see [`run_blocking`]).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    run_blocking(f).await?
}

type Ext = axum::Extension<Caller>;

fn credential_id(raw: &str) -> Result<CredentialId, ApiError> {
    CredentialId::parse(raw).map_err(|_| ApiError::not_found("no such credential"))
}

/// A store scope for the caller: its tenant, its key as the actor, and the request's source
/// IP, host and id on every record the store makes.
pub(crate) fn scope<'s>(s: &'s Shared, c: &Caller) -> Result<credvault_store::Scope<'s>, ApiError> {
    Ok(s.store
        .tenant(&c.tenant, c.actor())?
        .with_source_ip(c.source_ip.as_str())
        .with_client_host(c.host.as_str())
        .with_request_id(c.request_id.as_str()))
}

/// Whether the key's credential globs and environments cover `info`; a credential outside
/// them is answered as absent, so that a narrow key learns nothing of the others.
pub(crate) fn covered(c: &Caller, info: &credvault_store::CredentialInfo) -> Result<(), ApiError> {
    if c.key.policy.covers(&info.name, &info.environment) {
        Ok(())
    } else {
        Err(ApiError::not_found("no such credential"))
    }
}

fn restricted(c: &Caller) -> bool {
    !(c.key.policy.credentials.is_empty() && c.key.policy.environments.is_empty())
}

/// The body, or an error that names what is wrong and never echoes a value (serde's own
/// messages quote the offending input, so they are not passed on).
pub(crate) fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b).map_err(|e| match e {
        JsonRejection::JsonDataError(_) => ApiError::bad_request(
            "request body: not the expected fields and types (unknown field, missing field or \
             wrong type)",
        ),
        JsonRejection::JsonSyntaxError(_) => ApiError::bad_request("request body: not valid JSON"),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "request body: Content-Type must be application/json",
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "request body: larger than the gateway accepts",
        ),
        _ => ApiError::bad_request("request body: could not be read"),
    })
}

async fn types(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): Ext,
) -> Result<Response, ApiError> {
    c.require(ApiScope::Read)?;
    let list: Vec<_> = s.store.registry().iter().map(|t| t.definition()).collect();
    Ok(Json(serde_json::json!({ "types": list })).into_response())
}

async fn type_one(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): Ext,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    c.require(ApiScope::Read)?;
    let t = s
        .store
        .registry()
        .get(&id)
        .ok_or_else(|| ApiError::not_found("no such credential type"))?;
    Ok(Json(t.definition()).into_response())
}

/// Filters of `GET /api/credentials`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(rename = "type")]
    type_name: Option<String>,
    environment: Option<String>,
    tag: Option<String>,
    active: Option<bool>,
}

async fn list(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): Ext,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    c.require(ApiScope::Read)?;
    let Query(q) = q.map_err(|_| {
        ApiError::bad_request("query: expected only type, environment, tag and active=true|false")
    })?;
    let mut filter = ListFilter::new();
    if let Some(t) = q.type_name {
        filter = filter.type_name(t);
    }
    if let Some(e) = q.environment {
        filter = filter.environment(e);
    }
    if let Some(t) = q.tag {
        filter = filter.tag(t);
    }
    if let Some(a) = q.active {
        filter = filter.active(a);
    }
    let items = blocking(move || {
        let mut items = scope(&s, &c)?.list(&filter)?;
        items.retain(|i| c.key.policy.covers(&i.name, &i.environment));
        Ok(items)
    })
    .await?;
    Ok(Json(serde_json::json!({ "credentials": items })).into_response())
}

async fn get_one(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): Ext,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    c.require(ApiScope::Read)?;
    let id = credential_id(&id)?;
    let info = blocking(move || {
        let info = scope(&s, &c)?.get(&id)?;
        covered(&c, &info)?;
        Ok(info)
    })
    .await?;
    Ok(Json(info).into_response())
}

/// Body of a reveal: the fields (none: every revealable secret field) and the service asking.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevealBody {
    #[serde(default)]
    fields: Vec<String>,
    service: Option<String>,
}

fn service_label(c: &Caller, asked: Option<String>) -> Result<String, ApiError> {
    let s = asked.unwrap_or_else(|| {
        if c.key.policy.name.is_empty() {
            "gateway".to_owned()
        } else {
            c.key.policy.name.clone()
        }
    });
    if s.is_empty() || s.len() > MAX_SERVICE_LEN || s.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "service: 1-128 characters without control characters",
        ));
    }
    Ok(s)
}

async fn reveal(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): Ext,
    Path(id): Path<String>,
    body: Result<Json<RevealBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    c.require(ApiScope::Reveal)?;
    let body = json_body(body)?;
    if body.fields.len() > MAX_REVEAL_FIELDS {
        return Err(ApiError::bad_request("fields: at most 64"));
    }
    let service = service_label(&c, body.service)?;
    if let Some(source) = s.cfg.sources.get(&c.tenant).cloned() {
        return crate::source_routes::reveal(&s, &c, &*source, &id, &body.fields, &service).await;
    }
    let id = credential_id(&id)?;
    let out = blocking(move || {
        let scope = scope(&s, &c)?;
        if restricted(&c) {
            covered(&c, &scope.get(&id)?)?;
        }
        let names: Vec<&str> = body.fields.iter().map(String::as_str).collect();
        let revealed = scope.reveal(&id, &names, Some(&service))?;
        reveal_body(
            "id",
            id.as_str(),
            revealed
                .names()
                .map(|n| (n, revealed.expose_secret(n).unwrap_or_default())),
        )
    })
    .await?;
    Ok(secret_json(out))
}

/// A reveal's body, `{"<key>": <label>, "fields": {NAME: VALUE, ...}}`, written straight from
/// the values into the body with no copy in between (the buffer belongs to the HTTP stack once
/// sent).
pub(crate) fn reveal_body<'v>(
    key: &str,
    label: &str,
    fields: impl Iterator<Item = (&'v str, &'v str)>,
) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(256);
    out.push(b'{');
    serde_json::to_writer(&mut out, key).map_err(|_| ApiError::internal())?;
    out.push(b':');
    serde_json::to_writer(&mut out, label).map_err(|_| ApiError::internal())?;
    out.extend_from_slice(b",\"fields\":{");
    for (i, (name, value)) in fields.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, name).map_err(|_| ApiError::internal())?;
        out.push(b':');
        serde_json::to_writer(&mut out, value).map_err(|_| ApiError::internal())?;
    }
    out.extend_from_slice(b"}}");
    Ok(out)
}

/// A JSON body holding secrets: `Cache-Control: no-store`.
pub(crate) fn secret_json(body: Vec<u8>) -> Response {
    let mut resp = Response::new(axum::body::Body::from(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Body of a TOTP code request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TotpBody {
    service: Option<String>,
}

async fn totp(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): Ext,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    c.require(ApiScope::Totp)?;
    let id = credential_id(&id)?;
    // No body (with or without a JSON content type) is the same as `{}`.
    let body: TotpBody = if body.iter().all(u8::is_ascii_whitespace) {
        TotpBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|_| {
            ApiError::bad_request("request body: expected {\"service\": \"...\"} or nothing")
        })?
    };
    let service = service_label(&c, body.service)?;
    let out = blocking(move || {
        let scope = scope(&s, &c)?;
        if restricted(&c) {
            covered(&c, &scope.get(&id)?)?;
        }
        let code = scope.totp_code(&id, Some(&service))?;
        Ok(serde_json::json!({
            "code": code.expose_secret(),
            "step": code.step,
            "expires_at": code.expires_at,
        }))
    })
    .await?;
    let mut resp = Json(out).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hosts_are_normalised_or_refused() {
        for (raw, want) in [
            ("Acme.Example.COM", Some("acme.example.com")),
            ("acme.example.com:8443", Some("acme.example.com")),
            ("acme.example.com.", Some("acme.example.com")),
            ("127.0.0.1:80", Some("127.0.0.1")),
            ("[::1]:8443", Some("[::1]")),
            ("[::1]", Some("[::1]")),
            ("", None),
            ("acme.example.com:", None),
            ("acme.example.com:99999999", None),
            ("acme example.com", None),
            ("acme/evil", None),
            ("[::1]x", None),
            // A colon outside brackets is the port's only (gateway_parsers fuzz target).
            ("AcmeOM:84AcmeOM:43", None),
            ("::1", None),
            ("n..", None),
            ("a..b.example", None),
            (".example.com", None),
        ] {
            assert_eq!(normalise_host(raw).as_deref(), want, "{raw:?}");
        }
    }

    #[test]
    fn the_presented_key_comes_from_bearer_or_x_api_key() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert("x-api-key", HeaderValue::from_static("cvk_x"));
        assert_eq!(presented_key(&h), Some("cvk_x"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer  cvk_y "),
        );
        assert_eq!(presented_key(&h), Some("cvk_y"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(presented_key(&h), None, "another scheme is not a key");
    }

    proptest! {
        #[test]
        fn host_normalisation_never_panics_and_is_idempotent(raw in "\\PC{0,300}") {
            if let Some(h) = normalise_host(&raw) {
                prop_assert!(h.len() <= MAX_HOST_LEN);
                prop_assert_eq!(h.to_ascii_lowercase(), h.clone());
                prop_assert_eq!(normalise_host(&h), Some(h));
            }
        }
    }
}

/// Body of `POST /api/credentials`. `fields` holds secret values: it is moved into a
/// `NewCredential`, which wipes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[serde(rename = "type")]
    type_name: String,
    name: String,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    active: Option<bool>,
    #[serde(default)]
    expires_at: Option<i64>,
    fields: serde_json::Value,
}

async fn create(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): Ext,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    c.require(ApiScope::Write)?;
    let mut b = json_body(body)?;
    let environment = b
        .environment
        .take()
        .unwrap_or_else(|| credvault_store::DEFAULT_ENVIRONMENT.to_owned());
    if !c.key.policy.covers(&b.name, &environment) {
        return Err(ApiError::forbidden(
            "outside_key_scope",
            "this API key may not make a credential with that name or environment",
        ));
    }
    let fields = std::mem::take(&mut b.fields);
    let mut new = NewCredential::new(
        std::mem::take(&mut b.type_name),
        std::mem::take(&mut b.name),
        fields,
    )
    .environment(environment)
    .tags(std::mem::take(&mut b.tags));
    if let Some(d) = b.description.take() {
        new = new.description(d);
    }
    if b.active == Some(false) {
        new = new.inactive();
    }
    if let Some(t) = b.expires_at {
        new = new.expires_at(t);
    }
    let info = blocking(move || Ok(scope(&s, &c)?.create(new)?)).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

/// Body of `PUT /api/credentials/{id}`: only what changes. `fields` is a patch (a field set to
/// `null` is removed); `version`, when given, must be the credential's current one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    active: Option<bool>,
    #[serde(default, with = "double_option")]
    expires_at: Option<Option<i64>>,
    #[serde(default)]
    fields: Option<serde_json::Value>,
    #[serde(default)]
    version: Option<u64>,
}

/// `null` and absent told apart: absent leaves the expiry, `null` clears it.
mod double_option {
    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<i64>>, D::Error> {
        Option::<i64>::deserialize(d).map(Some)
    }
}

impl Drop for UpdateBody {
    fn drop(&mut self) {
        if let Some(f) = &mut self.fields {
            wipe_json(f);
        }
    }
}

impl Drop for CreateBody {
    fn drop(&mut self) {
        wipe_json(&mut self.fields);
    }
}

async fn update(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): Ext,
    Path(id): Path<String>,
    body: Result<Json<UpdateBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    c.require(ApiScope::Write)?;
    let id = credential_id(&id)?;
    let mut b = json_body(body)?;
    let info = blocking(move || {
        let scope = scope(&s, &c)?;
        let current = scope.get(&id)?;
        covered(&c, &current)?;
        if let Some(n) = &b.name {
            if !c.key.policy.covers(n, &current.environment) {
                return Err(ApiError::forbidden(
                    "outside_key_scope",
                    "this API key may not give the credential that name",
                ));
            }
        }
        let mut upd = CredentialUpdate::new();
        if let Some(f) = b.fields.take() {
            upd = upd.fields(f);
        }
        if let Some(n) = b.name.take() {
            upd = upd.name(n);
        }
        if let Some(d) = b.description.take() {
            upd = upd.description(d);
        }
        if let Some(t) = b.tags.take() {
            upd = upd.tags(t);
        }
        if let Some(a) = b.active {
            upd = upd.active(a);
        }
        if let Some(e) = b.expires_at {
            upd = upd.expires_at(e);
        }
        if let Some(v) = b.version {
            upd = upd.expect_version(v);
        }
        Ok(scope.update(&id, upd)?)
    })
    .await?;
    Ok(Json(info).into_response())
}

/// Query of `DELETE /api/credentials/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    version: Option<u64>,
}

async fn delete_one(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): Ext,
    Path(id): Path<String>,
    q: Result<Query<DeleteQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    c.require(ApiScope::Write)?;
    let id = credential_id(&id)?;
    let Query(q) = q.map_err(|_| ApiError::bad_request("query: expected only version=N"))?;
    blocking(move || {
        let scope = scope(&s, &c)?;
        covered(&c, &scope.get(&id)?)?;
        Ok(scope.delete(&id, q.version)?)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn test_one(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): Ext,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    c.require(ApiScope::Test)?;
    let id = credential_id(&id)?;
    let out = blocking(move || {
        let scope = scope(&s, &c)?;
        covered(&c, &scope.get(&id)?)?;
        Ok(scope.test(&id)?)
    })
    .await?;
    Ok(Json(serde_json::json!({
        "status": out.status_str(),
        "message": out.message,
    }))
    .into_response())
}

/// Query of `GET /api/credentials/{id}/audit-logs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditLogQuery {
    limit: Option<usize>,
}

/// Most events one audit-log answer holds (the newest).
const MAX_AUDIT_EVENTS: usize = 1000;

async fn audit_logs(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): Ext,
    Path(id): Path<String>,
    q: Result<Query<AuditLogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    c.require(ApiScope::Admin)?;
    let id = credential_id(&id)?;
    let Query(q) = q.map_err(|_| ApiError::bad_request("query: expected only limit=N"))?;
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_AUDIT_EVENTS);
    let Some(reader) = s.audit_reader.get().cloned() else {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "unsupported",
            "this gateway was started without access to the audit log",
        ));
    };
    let out = blocking(move || {
        covered(&c, &scope(&s, &c)?.get(&id)?)?;
        let query = AuditQuery::new()
            .tenant(c.tenant.as_str())
            .resource(id.as_str());
        let events = reader(&query)?.events;
        let skip = events.len().saturating_sub(limit);
        Ok(events.into_iter().skip(skip).collect::<Vec<_>>())
    })
    .await?;
    Ok(Json(serde_json::json!({ "events": out })).into_response())
}

async fn data_key(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): Ext,
) -> Result<Response, ApiError> {
    c.require(ApiScope::Write)?;
    let out = blocking(move || {
        let key = scope(&s, &c)?.client_data_key()?;
        Ok(serde_json::json!({
            "key_id": key.id().to_string(),
            "key": base64::engine::general_purpose::STANDARD.encode(key.expose_secret()),
        }))
    })
    .await?;
    let mut resp = Json(out).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Body of `POST /api/credentials/sealed`: a credential sealed by the client under the
/// tenant's data key (`SealedCredential::seal`), the envelope in standard base64.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedBody {
    id: String,
    #[serde(rename = "type")]
    type_name: String,
    name: String,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    public_fields: Option<serde_json::Value>,
    envelope: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    expires_at: Option<i64>,
}

/// Largest envelope accepted (base64 text), well above any credential's.
const MAX_ENVELOPE_B64: usize = 512 * 1024;

async fn create_sealed(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): Ext,
    body: Result<Json<SealedBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    c.require(ApiScope::Write)?;
    let b = json_body(body)?;
    let environment = b
        .environment
        .unwrap_or_else(|| credvault_store::DEFAULT_ENVIRONMENT.to_owned());
    if !c.key.policy.covers(&b.name, &environment) {
        return Err(ApiError::forbidden(
            "outside_key_scope",
            "this API key may not make a credential with that name or environment",
        ));
    }
    if b.envelope.len() > MAX_ENVELOPE_B64 {
        return Err(ApiError::bad_request("envelope: larger than 512 KiB"));
    }
    let envelope = base64::engine::general_purpose::STANDARD
        .decode(b.envelope.as_bytes())
        .map_err(|_| ApiError::bad_request("envelope: not standard base64"))?;
    let id = CredentialId::parse(&b.id)
        .map_err(|_| ApiError::bad_request("id: expected cred_ and 32 lower-case hex digits"))?;
    let sealed = credvault_store::SealedCredential {
        id,
        type_name: b.type_name,
        name: b.name,
        environment,
        public_fields: b
            .public_fields
            .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new())),
        envelope,
        description: b.description.unwrap_or_default(),
        tags: b.tags,
        expires_at: b.expires_at,
    };
    let info = blocking(move || Ok(scope(&s, &c)?.create_sealed(sealed)?)).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}
