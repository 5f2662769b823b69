//! The credential-injecting proxy: `ANY /proxy/{credential}/{*path}`.
//!
//! The client presents its gateway key where the upstream expects its own; the gateway
//! removes it, renders the credential type's `authenticate` rule into the request, forwards it
//! to the credential's `base_url` over rustls (to checked addresses only), and streams the
//! answer back through known-secret masking and the tenant's DLP detectors. The exchange ends
//! with a `proxied` audit record (status, sizes, detections, an LLM's token usage) that is
//! written before the last bytes of the answer are released.

use std::collections::BTreeMap;
use std::future::Future as _;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use credvault_dlp::{
    Action as DlpAction, Finding, Masker, MaskerBuilder, Scanner, SharedStreamMasker,
};
use credvault_store::audit::{Action, Details, DlpCount};
use credvault_store::net::{classify, AddressClass};
use credvault_store::{AuditEvent, CredentialId, RequestAuth, Store};
use http_body::{Frame, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::error::ApiError;
use crate::gateway::{blocking, scope, Caller, Shared};
use crate::ApiScope;

/// Longest line the response scanner waits for before scanning what it holds (a JSON document
/// on one line is scanned in pieces of about this size, cut after a `"` or `,` where one is
/// near).
const MAX_SCAN_SEGMENT: usize = 64 * 1024;
/// Most of a JSON (non-streamed) answer kept to read an LLM's usage from.
const MAX_USAGE_BODY: usize = 1 << 20;
/// Header carrying the credential's environment (removed before forwarding).
pub(crate) const ENVIRONMENT_HEADER: &str = "x-credvault-environment";
/// The reference known secrets are masked as in answers: `[cv:injected]`.
const MASK_REFERENCE: &str = "injected";

/// Where the proxy may connect and whom it trusts.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct UpstreamConfig {
    /// Ranges opened explicitly beyond public addresses (`--allow-upstream`): loopback,
    /// private and link-local addresses are refused unless listed here; reserved addresses
    /// (unspecified, multicast, broadcast, documentation) always are.
    pub allow: Vec<ipnet::IpNet>,
    /// Extra certificate authorities for upstream TLS (PEM, `--upstream-ca`).
    pub extra_roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// Whether the system's certificate authorities are trusted too (default yes).
    pub system_roots: bool,
    /// How long an upstream may take to connect (default 10 s).
    pub connect_timeout: Duration,
    /// Longest a proxied answer may stream (default 10 min; LLM answers stream for minutes).
    pub stream_timeout: Duration,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            extra_roots: Vec::new(),
            system_roots: true,
            connect_timeout: Duration::from_secs(10),
            stream_timeout: Duration::from_secs(600),
        }
    }
}

/// Why the proxy would not connect to an upstream address (no value of the URL in it).
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("the upstream host is a {0} address; open it with --allow-upstream")]
    Address(&'static str),
    #[error("the upstream host is a reserved address, which is never reached")]
    Reserved,
    #[error("plain http goes only to loopback")]
    PlainHttp,
    #[error("the upstream host does not resolve")]
    Unresolved,
    #[error("the upstream URL has no host")]
    NoHost,
}

/// Connects to an upstream's checked addresses: the host is resolved here, every address
/// checked against the policy (one refused address refuses the host), and the connection made
/// to those addresses only, so a DNS answer cannot change between the check and the connection.
#[derive(Clone)]
pub(crate) struct Checked {
    allow: Arc<Vec<ipnet::IpNet>>,
    timeout: Duration,
}

impl Checked {
    fn permits(&self, ip: IpAddr) -> Result<(), Refused> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match classify(ip) {
            AddressClass::Public => Ok(()),
            AddressClass::Reserved => Err(Refused::Reserved),
            class => {
                if self.allow.iter().any(|n| n.contains(&ip)) {
                    Ok(())
                } else {
                    Err(Refused::Address(class.as_str()))
                }
            }
        }
    }

    async fn connect(
        self,
        uri: Uri,
    ) -> Result<TokioIo<TcpStream>, Box<dyn std::error::Error + Send + Sync>> {
        let host = uri.host().ok_or(Refused::NoHost)?;
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let literal = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let addrs: Vec<SocketAddr> = match literal.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((literal, port))
                .await
                .map_err(|_| Refused::Unresolved)?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(Refused::Unresolved.into());
        }
        for a in &addrs {
            self.permits(a.ip())?;
        }
        if !https
            && !addrs
                .iter()
                .all(|a| classify(a.ip()) == AddressClass::Loopback)
        {
            return Err(Refused::PlainHttp.into());
        }
        let mut last: Box<dyn std::error::Error + Send + Sync> = "no address".into();
        for a in addrs {
            match tokio::time::timeout(self.timeout, TcpStream::connect(a)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return Ok(TokioIo::new(s));
                }
                Ok(Err(e)) => last = e.into(),
                Err(_) => last = "connect timed out".into(),
            }
        }
        Err(last)
    }
}

impl tower::Service<Uri> for Checked {
    type Response = TokioIo<TcpStream>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect(uri))
    }
}

/// The HTTP client the proxy forwards with (pooled connections, HTTP/1.1 and HTTP/2).
pub(crate) type UpstreamClient = Client<hyper_rustls::HttpsConnector<Checked>, axum::body::Body>;

/// The client for `cfg`: rustls with ring, the system's roots (unless turned off) and the
/// extra ones, connections through [`Checked`].
pub(crate) fn client(cfg: &UpstreamConfig) -> UpstreamClient {
    let mut roots = rustls::RootCertStore::empty();
    if cfg.system_roots {
        for c in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(c);
        }
    }
    for c in &cfg.extra_roots {
        let _ = roots.add(c.clone());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        // ring offers every default protocol version; this cannot fail.
        .unwrap_or_else(|_| {
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        });
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(Checked {
            allow: Arc::new(cfg.allow.iter().map(ipnet::IpNet::trunc).collect()),
            timeout: cfg.connect_timeout,
        });
    Client::builder(TokioExecutor::new()).build(https)
}

/// Headers that belong to one connection, never forwarded (RFC 9110 section 7.6.1), and the
/// gateway's own.
fn dropped(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
            | "accept-encoding"
            | "forwarded"
            | "x-forwarded-for"
            | "x-forwarded-host"
            | "x-forwarded-proto"
            | "x-vault-token"
    ) || name.as_str().starts_with("x-credvault-")
}

/// Whether a header value carries a gateway key (`cvk_...`, maybe after a scheme word).
pub(crate) fn carries_key(v: &[u8]) -> bool {
    v.windows(crate::apikey::KEY_PREFIX.len())
        .any(|w| w == crate::apikey::KEY_PREFIX.as_bytes())
}

/// Names listed in `Connection` are hop-by-hop too.
fn connection_listed(h: &HeaderMap) -> Vec<HeaderName> {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect()
}

/// The path after `/proxy/{credential}`, as sent (still percent-encoded), refused when a
/// segment is `.` or `..` (in any encoding) or hides a slash or backslash: a request stays
/// under the credential's base URL.
pub(crate) fn tail_of(raw_path: &str) -> Result<&str, ApiError> {
    let rest = raw_path.strip_prefix("/proxy/").unwrap_or_default();
    let tail = rest.split_once('/').map_or("", |(_, t)| t);
    for seg in tail.split('/') {
        let decoded = percent_encoding::percent_decode_str(seg).collect::<Vec<u8>>();
        if decoded == b"."
            || decoded == b".."
            || decoded.contains(&b'/')
            || decoded.contains(&b'\\')
        {
            return Err(ApiError::bad_request(
                "path: dot segments and encoded slashes are not forwarded",
            ));
        }
    }
    Ok(tail)
}

/// The upstream URL: `base` + `/` + `tail` + the client's query, with the credential's query
/// parameters set (replacing the client's of the same name). Checked to stay on the base's
/// origin and under its path.
fn target(
    base: &str,
    tail: &str,
    query: Option<&str>,
    auth: &RequestAuth,
) -> Result<url::Url, ApiError> {
    let bad = || {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_invalid",
            "the credential's base_url is not an absolute http(s) URL",
        )
    };
    let base = url::Url::parse(base).map_err(|_| bad())?;
    if !matches!(base.scheme(), "http" | "https")
        || base.host().is_none()
        || base.cannot_be_a_base()
    {
        return Err(bad());
    }
    if !base.username().is_empty() || base.password().is_some() {
        return Err(bad());
    }
    let base_path = base.path().trim_end_matches('/').to_owned();
    let mut joined = base.clone();
    joined.set_query(None);
    joined.set_fragment(None);
    joined.set_path(&format!("{base_path}/{tail}"));
    if let Some(q) = query {
        joined.set_query(Some(q));
    }
    if joined.origin() != base.origin() || !joined.path().starts_with(&base_path) {
        return Err(ApiError::bad_request(
            "path: leaves the credential's base URL",
        ));
    }
    if !auth.auth.query.is_empty() {
        let names: Vec<&str> = auth
            .auth
            .query
            .iter()
            .map(|(k, _)| k.expose_secret())
            .collect();
        let kept: Vec<(String, String)> = joined
            .query_pairs()
            .filter(|(k, _)| !names.contains(&k.as_ref()))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let mut q = joined.query_pairs_mut();
        q.clear();
        for (k, v) in &kept {
            q.append_pair(k, v);
        }
        for (k, v) in &auth.auth.query {
            q.append_pair(k.expose_secret(), v.expose_secret());
        }
    }
    Ok(joined)
}

/// What the proxy counts while an exchange runs, for its `proxied` record.
#[derive(Default)]
struct Tally {
    detections: BTreeMap<(&'static str, String, &'static str), u64>,
    masked: u64,
    sent: u64,
    received: u64,
    upstream_status: Option<u16>,
    model: Option<String>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

impl Tally {
    fn count(&mut self, direction: &'static str, findings: &[Finding]) {
        for f in findings {
            let action = match f.action {
                DlpAction::Block => "block",
                DlpAction::Warn => "warn",
                _ => "redact",
            };
            *self
                .detections
                .entry((direction, f.detector.clone(), action))
                .or_default() += 1;
        }
    }

    fn details(&self, credential_type: &str, completed: bool) -> Details {
        Details::Proxied {
            credential_type: credential_type.to_owned(),
            upstream_status: self.upstream_status,
            bytes_sent: self.sent,
            bytes_received: self.received,
            completed,
            detections: self
                .detections
                .iter()
                .map(|((d, name, a), n)| DlpCount::new(*d, name.as_str(), *a, *n))
                .collect(),
            masked: self.masked,
            model: self.model.clone(),
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
        }
    }

    /// Reads an LLM answer's model and token usage from one JSON value (OpenAI chat and
    /// responses, Anthropic messages and their stream events, Gemini), keeping the largest
    /// counts seen (streams report running totals).
    fn note_usage(&mut self, v: &serde_json::Value) {
        let inner = v.get("message").or_else(|| v.get("response")).unwrap_or(v);
        let model = [v, inner]
            .iter()
            .find_map(|o| o.get("model").or_else(|| o.get("modelVersion")))
            .and_then(serde_json::Value::as_str);
        if let Some(m) = model {
            if !m.is_empty() && m.len() <= 128 && !m.chars().any(char::is_control) {
                self.model = Some(m.to_owned());
            }
        }
        let num = |o: &serde_json::Value, keys: &[&str]| {
            keys.iter()
                .find_map(|k| o.get(*k).and_then(serde_json::Value::as_u64))
        };
        for u in [v, inner]
            .iter()
            .filter_map(|o| o.get("usage").or_else(|| o.get("usageMetadata")))
        {
            if let Some(n) = num(u, &["prompt_tokens", "input_tokens", "promptTokenCount"]) {
                self.input_tokens = Some(self.input_tokens.unwrap_or(0).max(n));
            }
            if let Some(n) = num(
                u,
                &["completion_tokens", "output_tokens", "candidatesTokenCount"],
            ) {
                self.output_tokens = Some(self.output_tokens.unwrap_or(0).max(n));
            }
        }
    }
}

/// `text` with `redact` findings replaced by `[redacted:<detector>]`.
fn redact(text: &[u8], findings: &[Finding], out: &mut Vec<u8>) {
    let mut pos = 0;
    for f in findings.iter().filter(|f| f.action == DlpAction::Redact) {
        if f.range.start < pos {
            continue;
        }
        out.extend_from_slice(&text[pos..f.range.start]);
        out.extend_from_slice(b"[redacted:");
        out.extend_from_slice(f.detector.as_bytes());
        out.push(b']');
        pos = f.range.end;
    }
    out.extend_from_slice(&text[pos..]);
}

/// The masker of one exchange: every value the credential put into the request, in every
/// encoding the masker knows. A value too short to mask safely everywhere (a one-letter user
/// name) is left out.
fn masker_for(auth: &RequestAuth) -> Masker {
    let mut b = MaskerBuilder::new().quick_build();
    for s in auth.secrets() {
        if b.add(MASK_REFERENCE, s).is_err() && s.len() >= 8 {
            let _ = b.add_forced(MASK_REFERENCE, s);
        }
    }
    b.build().unwrap_or_else(|_| Masker::empty())
}

/// The record written when the exchange ends.
struct Closing {
    store: Store,
    event: AuditEvent,
    credential_type: String,
}

impl Closing {
    fn event(&self, tally: &Tally, completed: bool) -> AuditEvent {
        self.event
            .clone()
            .with_details(tally.details(&self.credential_type, completed))
    }
}

/// The answer's body: upstream bytes through the masker, then the detectors a segment at a
/// time; the `proxied` record is written before the last bytes go out.
struct ScannedBody {
    inner: hyper::body::Incoming,
    masker: SharedStreamMasker,
    marker: Vec<u8>,
    scanner: Arc<Scanner>,
    /// Masked bytes not yet through the detectors.
    pending: Vec<u8>,
    /// Whether this is an event stream (usage read from each `data:` line) or a JSON document
    /// (usage read at the end from `json`).
    sse: bool,
    json: Option<Vec<u8>>,
    tally: Tally,
    closing: Option<Closing>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    state: BodyState,
}

enum BodyState {
    Streaming,
    /// Writing the record; then `last` goes out (or the body fails).
    Recording {
        job: tokio::task::JoinHandle<bool>,
        last: Bytes,
        fail: Option<&'static str>,
    },
    /// The record is written (`ok`) or failed; then as `Recording`.
    Recorded {
        ok: bool,
        last: Bytes,
        fail: Option<&'static str>,
    },
    Done,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl ScannedBody {
    /// Runs `ready` (masked bytes) through the detectors, up to its last line end (all of it
    /// when `all`), appending what goes out to `out`. `Err` when a `block` detector fired.
    fn scan(&mut self, all: bool, out: &mut Vec<u8>) -> Result<(), ()> {
        loop {
            let cut = if all {
                self.pending.len()
            } else if let Some(nl) = self.pending.iter().rposition(|&b| b == b'\n') {
                nl + 1
            } else if self.pending.len() > MAX_SCAN_SEGMENT {
                // One long line: cut after a `"` or `,` in its last 4 KiB when there is one.
                let from = MAX_SCAN_SEGMENT - 4096;
                self.pending[from..MAX_SCAN_SEGMENT]
                    .iter()
                    .rposition(|&b| b == b'"' || b == b',')
                    .map_or(MAX_SCAN_SEGMENT, |p| from + p + 1)
            } else {
                return Ok(());
            };
            if cut == 0 {
                return Ok(());
            }
            let seg: Vec<u8> = self.pending.drain(..cut).collect();
            let findings = self.scanner.scan(&seg);
            self.tally.count("response", &findings);
            self.tally.masked += count(&seg, &self.marker);
            if self.sse {
                for line in seg.split(|&b| b == b'\n') {
                    if let Some(data) = line.strip_prefix(b"data:") {
                        if let Ok(v) =
                            serde_json::from_slice::<serde_json::Value>(data.trim_ascii())
                        {
                            self.tally.note_usage(&v);
                        }
                    }
                }
            } else if let Some(j) = &mut self.json {
                if j.len() + seg.len() <= MAX_USAGE_BODY {
                    j.extend_from_slice(&seg);
                } else {
                    self.json = None;
                }
            }
            if findings.iter().any(|f| f.action == DlpAction::Block) {
                return Err(());
            }
            redact(&seg, &findings, out);
        }
    }

    fn close(&mut self, last: Bytes, completed: bool, fail: Option<&'static str>) {
        if completed {
            if let Some(j) = self.json.take() {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&j) {
                    self.tally.note_usage(&v);
                }
            }
        }
        let Some(c) = self.closing.take() else {
            self.state = BodyState::Recorded {
                ok: true,
                last,
                fail,
            };
            return;
        };
        let event = c.event(&self.tally, completed);
        let store = c.store;
        // On a multi-threaded runtime the record is written right here, after the worker hands
        // its other tasks on (as every store call of the gateway); elsewhere on the blocking
        // pool.
        use tokio::runtime::{Handle, RuntimeFlavor};
        self.state = match Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(RuntimeFlavor::MultiThread) => BodyState::Recorded {
                ok: tokio::task::block_in_place(|| store.record_event(&event).is_ok()),
                last,
                fail,
            },
            _ => BodyState::Recording {
                job: tokio::task::spawn_blocking(move || store.record_event(&event).is_ok()),
                last,
                fail,
            },
        };
    }
}

fn count(hay: &[u8], needle: &[u8]) -> u64 {
    if needle.is_empty() || hay.len() < needle.len() {
        return 0;
    }
    hay.windows(needle.len()).filter(|w| *w == needle).count() as u64
}

impl http_body::Body for ScannedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Recording { job, .. } => {
                    let ok = match Pin::new(job).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(r) => matches!(r, Ok(true)),
                    };
                    let BodyState::Recording { last, fail, .. } =
                        std::mem::replace(&mut this.state, BodyState::Done)
                    else {
                        continue;
                    };
                    this.state = BodyState::Recorded { ok, last, fail };
                }
                BodyState::Recorded { ok, last, fail } => {
                    let recorded = *ok;
                    let last = std::mem::take(last);
                    let fail = fail.take();
                    this.state = BodyState::Done;
                    if !recorded {
                        tracing::error!("proxied record failed; the answer is cut");
                        return Poll::Ready(Some(Err("audit record failed".into())));
                    }
                    if let Some(why) = fail {
                        return Poll::Ready(Some(Err(why.into())));
                    }
                    if !last.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(last))));
                    }
                    return Poll::Ready(None);
                }
                BodyState::Streaming => {}
            }
            if this.deadline.as_mut().poll(cx).is_ready() {
                this.close(
                    Bytes::new(),
                    false,
                    Some("the answer took longer than allowed"),
                );
                continue;
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers are not forwarded
                    };
                    this.tally.received += data.len() as u64;
                    let mut masked = Vec::with_capacity(data.len());
                    this.masker.push(&data, &mut masked);
                    this.pending.extend_from_slice(&masked);
                    zeroize::Zeroize::zeroize(&mut masked);
                    let mut out = Vec::new();
                    if this.scan(false, &mut out).is_err() {
                        this.close(Bytes::new(), false, Some("blocked by a DLP detector"));
                        continue;
                    }
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                }
                Poll::Ready(Some(Err(_))) => {
                    this.close(Bytes::new(), false, Some("the upstream answer broke off"));
                }
                Poll::Ready(None) => {
                    let mut tail = Vec::new();
                    this.masker.finish(&mut tail);
                    this.pending.extend_from_slice(&tail);
                    let mut out = Vec::new();
                    if this.scan(true, &mut out).is_err() {
                        this.close(Bytes::new(), false, Some("blocked by a DLP detector"));
                    } else {
                        this.close(Bytes::from(out), true, None);
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for ScannedBody {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.pending);
        // The client left before the end: the exchange is still recorded.
        if let Some(c) = self.closing.take() {
            let event = c.event(&self.tally, false);
            let store = c.store;
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                h.spawn_blocking(move || {
                    let _ = store.record_event(&event);
                });
            }
        }
    }
}

/// Finds the credential a proxy path names: its id (`cred_...`) or its name in the
/// environment of the `X-Credvault-Environment` header (default `production`).
fn find(s: &Shared, c: &Caller, named: &str, environment: &str) -> Result<CredentialId, ApiError> {
    let scope = scope(s, c)?;
    let info = match CredentialId::parse(named) {
        Ok(id) => scope.get(&id)?,
        Err(_) => scope.find(named, environment)?,
    };
    crate::gateway::covered(c, &info)?;
    Ok(info.id)
}

fn outcome_error(e: &BoxError) -> ApiError {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e.as_ref());
    while let Some(err) = src {
        if let Some(r) = err.downcast_ref::<Refused>() {
            return ApiError::forbidden("upstream_refused", r.to_string());
        }
        src = err.source();
    }
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "upstream_unavailable",
        "the upstream could not be reached",
    )
}

/// `ANY /proxy/{credential}/{*path}` (and `/proxy/{credential}`).
pub(crate) async fn proxy(
    State(s): State<Arc<Shared>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(params): Path<BTreeMap<String, String>>,
    req: Request,
) -> Result<Response, ApiError> {
    c.require(ApiScope::Proxy)?;
    let named = params.get("credential").cloned().unwrap_or_default();
    let (parts, body) = req.into_parts();
    let tail = tail_of(parts.uri.path())?.to_owned();
    let query = parts.uri.query().map(str::to_owned);
    let environment = parts
        .headers
        .get(ENVIRONMENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(credvault_store::DEFAULT_ENVIRONMENT)
        .to_owned();
    let mut body = axum::body::to_bytes(body, s.cfg.body_limit)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "request body: larger than the gateway accepts",
            )
        })?;
    let scanner = s.dlp_for(&c.tenant);
    let mut tally = Tally::default();

    // The request body through the detectors before anything leaves: a `block` finding stops
    // it here; `redact` ones are replaced.
    let findings = scanner.scan(&body);
    tally.count("request", &findings);
    let blocked = findings.iter().any(|f| f.action == DlpAction::Block);
    if !blocked && findings.iter().any(|f| f.action == DlpAction::Redact) {
        let mut out = Vec::with_capacity(body.len());
        redact(&body, &findings, &mut out);
        body = Bytes::from(out);
    }

    let service = if c.key.policy.name.is_empty() {
        "proxy".to_owned()
    } else {
        format!("proxy:{}", c.key.policy.name)
    };
    // Which credential, may this key use it, and (unless the body is refused) the credential
    // put to use: access checked and recorded by the store first. One blocking hand-off.
    let (resource, auth) = match s.cfg.sources.get(&c.tenant).cloned() {
        // A credential of an external source: fetched for this request only, recorded, wiped.
        Some(src) => {
            let resource = format!("source:{}:{named}", src.kind());
            if blocked {
                (resource, None)
            } else {
                let auth =
                    crate::source_routes::request_auth(&s, &c, &*src, &named, &service).await?;
                (resource, Some(auth))
            }
        }
        None => {
            let (s2, c2, env, svc) = (
                Arc::clone(&s),
                c.clone(),
                environment.clone(),
                service.clone(),
            );
            blocking(move || {
                let id = find(&s2, &c2, &named, &env)?;
                if blocked {
                    return Ok((id.to_string(), None));
                }
                let auth = scope(&s2, &c2)?.authenticate_request(&id, Some(&svc))?;
                Ok((id.to_string(), Some(auth)))
            })
            .await?
        }
    };
    let base_event = AuditEvent::new(
        c.tenant.as_str(),
        format!("apikey:{}", c.key.id),
        Action::Proxied,
    )
    .with_resource(credvault_store::audit::Resource::credential(
        resource.as_str(),
    ))
    .with_source_ip(c.source_ip.as_str())
    .with_client_host(c.host.as_str())
    .with_request_id(c.request_id.as_str());
    let record = |tally: &Tally, ty: &str| {
        let store = s.store.clone();
        let event = base_event.clone().with_details(tally.details(ty, false));
        async move { blocking(move || store.record_event(&event).map_err(ApiError::from)).await }
    };
    let Some(auth) = auth else {
        record(&tally, "").await?;
        return Err(ApiError::forbidden(
            "dlp_blocked",
            format!(
                "request body: refused by DLP detector {}",
                findings
                    .iter()
                    .filter(|f| f.action == DlpAction::Block)
                    .map(|f| f.detector.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    };
    let Some(base) = auth.base_url.as_deref() else {
        return Err(ApiError::bad_request(
            "the credential has no base_url: the proxy does not know where to send it",
        ));
    };
    if !auth.auth.body.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "unsupported",
            "this credential type authenticates in the request body, which the proxy does not rewrite",
        ));
    }
    let url = target(base, &tail, query.as_deref(), &auth)?;
    let uri: Uri = url
        .as_str()
        .parse()
        .map_err(|_| ApiError::bad_request("path: not a valid upstream URI"))?;

    // Headers: the client's, less hop-by-hop ones, the gateway's own and every one carrying
    // a gateway key; then the credential's.
    let listed = connection_listed(&parts.headers);
    let mut headers = HeaderMap::new();
    for (k, v) in &parts.headers {
        if dropped(k) || listed.contains(k) || carries_key(v.as_bytes()) {
            continue;
        }
        headers.append(k.clone(), v.clone());
    }
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    let bad_header = || {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_invalid",
            "the credential's authenticate rule renders an invalid header",
        )
    };
    for (k, v) in &auth.auth.headers {
        let name =
            HeaderName::from_bytes(k.expose_secret().as_bytes()).map_err(|_| bad_header())?;
        if v.is_empty() {
            headers.remove(&name);
            continue;
        }
        let mut value = HeaderValue::from_str(v.expose_secret()).map_err(|_| bad_header())?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    if let Some((u, p)) = &auth.auth.basic {
        let mut pair =
            zeroize::Zeroizing::new(format!("{}:{}", u.expose_secret(), p.expose_secret()));
        let mut text = zeroize::Zeroizing::new(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
        ));
        zeroize::Zeroize::zeroize(&mut *pair);
        let mut value = HeaderValue::from_str(&text).map_err(|_| bad_header())?;
        zeroize::Zeroize::zeroize(&mut *text);
        value.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, value);
    }
    let masker = Arc::new(masker_for(&auth));
    let credential_type = auth.type_name.clone();
    drop(auth);

    tally.sent = body.len() as u64;
    let mut up = axum::http::Request::new(axum::body::Body::from(body));
    *up.method_mut() = parts.method.clone();
    *up.uri_mut() = uri;
    *up.headers_mut() = headers;
    let answer = match s.upstream.request(up).await {
        Ok(a) => a,
        Err(e) => {
            record(&tally, &credential_type).await?;
            let boxed: BoxError = Box::new(e);
            return Err(outcome_error(&boxed));
        }
    };
    tally.upstream_status = Some(answer.status().as_u16());
    let (aparts, incoming) = answer.into_parts();
    if aparts
        .headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        record(&tally, &credential_type).await?;
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_encoding",
            "the upstream answered compressed although asked not to; a compressed answer cannot be scanned",
        ));
    }
    let mut out = Response::new(axum::body::Body::empty());
    *out.status_mut() = aparts.status;
    let listed = connection_listed(&aparts.headers);
    for (k, v) in &aparts.headers {
        if dropped(k) || listed.contains(k) {
            continue;
        }
        // A header echoing the credential is masked like the body.
        let masked = masker.mask_bytes(v.as_bytes());
        if masked.as_slice() == v.as_bytes() {
            out.headers_mut().append(k.clone(), v.clone());
        } else if let Ok(m) = HeaderValue::from_bytes(&masked) {
            tally.masked += 1;
            out.headers_mut().append(k.clone(), m);
        }
    }
    let ctype = aparts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let sse = ctype.starts_with("text/event-stream");
    let json = ctype.starts_with("application/json") || ctype.contains("+json");
    let marker = format!("[cv:{MASK_REFERENCE}]").into_bytes();
    let scanned = ScannedBody {
        inner: incoming,
        masker: SharedStreamMasker::new(masker),
        marker,
        scanner,
        pending: Vec::new(),
        sse,
        json: json.then(Vec::new),
        tally,
        closing: Some(Closing {
            store: s.store.clone(),
            event: base_event,
            credential_type,
        }),
        deadline: Box::pin(tokio::time::sleep(s.cfg.upstream.stream_timeout)),
        state: BodyState::Streaming,
    };
    *out.body_mut() = axum::body::Body::new(scanned);
    Ok(out.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_and_hidden_slashes_are_refused() {
        assert_eq!(tail_of("/proxy/c/v1/models").unwrap(), "v1/models");
        assert_eq!(tail_of("/proxy/c").unwrap(), "");
        assert_eq!(tail_of("/proxy/c/").unwrap(), "");
        for bad in [
            "/proxy/c/../admin",
            "/proxy/c/v1/%2e%2e/admin",
            "/proxy/c/v1/%2E/x",
            "/proxy/c/a%2fb",
            "/proxy/c/a%5Cb",
            "/proxy/c/.",
        ] {
            assert!(tail_of(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn usage_is_read_from_openai_anthropic_and_gemini_shapes() {
        let mut t = Tally::default();
        t.note_usage(&serde_json::json!({"model": "gpt-4o-mini", "usage": {"prompt_tokens": 12, "completion_tokens": 34}}));
        assert_eq!(
            (t.model.as_deref(), t.input_tokens, t.output_tokens),
            (Some("gpt-4o-mini"), Some(12), Some(34))
        );
        let mut t = Tally::default();
        t.note_usage(&serde_json::json!({"type": "message_start", "message": {"model": "claude-x", "usage": {"input_tokens": 7, "output_tokens": 1}}}));
        t.note_usage(&serde_json::json!({"type": "message_delta", "usage": {"output_tokens": 40}}));
        assert_eq!(
            (t.model.as_deref(), t.input_tokens, t.output_tokens),
            (Some("claude-x"), Some(7), Some(40))
        );
        let mut t = Tally::default();
        t.note_usage(&serde_json::json!({"modelVersion": "gemini-2", "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 5}}));
        assert_eq!(
            (t.model.as_deref(), t.input_tokens, t.output_tokens),
            (Some("gemini-2"), Some(3), Some(5))
        );
        let mut t = Tally::default();
        t.note_usage(&serde_json::json!({"model": "bad\nmodel", "usage": {"prompt_tokens": "x"}}));
        assert_eq!((t.model, t.input_tokens), (None, None));
    }

    #[test]
    fn the_policy_opens_only_listed_ranges_and_never_reserved_ones() {
        let c = Checked {
            allow: Arc::new(vec![
                "127.0.0.0/8".parse().unwrap(),
                "0.0.0.0/0".parse().unwrap(),
            ]),
            timeout: Duration::from_secs(1),
        };
        assert!(c.permits("127.0.0.1".parse().unwrap()).is_ok());
        assert!(c.permits("::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert!(matches!(
            c.permits("0.0.0.0".parse().unwrap()),
            Err(Refused::Reserved)
        ));
        let closed = Checked {
            allow: Arc::new(Vec::new()),
            timeout: Duration::from_secs(1),
        };
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "169.254.169.254",
            "::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(closed.permits(ip.parse().unwrap()).is_err(), "{ip}");
        }
        assert!(closed.permits("93.184.216.34".parse().unwrap()).is_ok());
    }

    #[test]
    fn a_key_in_any_header_is_recognised_for_removal() {
        assert!(carries_key(b"Bearer cvk_abc"));
        assert!(carries_key(b"cvk_abc"));
        assert!(!carries_key(b"Bearer sk-abc"));
    }
}
