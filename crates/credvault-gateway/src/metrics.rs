//! Prometheus metrics (`GET /metrics`, text exposition format): requests by route, method and
//! status; latency by route; rate-limit refusals; audit failures. Labels hold declared routes
//! and status codes only: never a tenant, a key, a credential or a path.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~13 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    rate_limited: Family<LimitLabels, Counter>,
    audit_failures: Counter,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("credvault_gateway");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let rate_limited = Family::<LimitLabels, Counter>::default();
        let audit_failures = Counter::default();
        registry.register(
            "requests",
            "Requests answered, by declared route, method and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its response, by declared route",
            latency.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit, by limit (key or tenant)",
            rate_limited.clone(),
        );
        registry.register(
            "audit_failures",
            "Requests whose audit record could not be written (their results were withheld)",
            audit_failures.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            rate_limited,
            audit_failures,
        }
    }

    pub(crate) fn request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    pub(crate) fn rate_limited(&self, limit: &'static str) {
        self.rate_limited
            .get_or_create(&LimitLabels { limit })
            .inc();
    }

    pub(crate) fn audit_failure(&self) {
        self.audit_failures.inc();
    }

    /// The text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
