//! Per-credential session settings and the proxy resolution.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::SessionError;

/// Which parts of a browser's state are kept for a credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoreKinds {
    /// Cookies (`cookies`).
    pub cookies: bool,
    /// Local storage (`origins[].localStorage`).
    pub local: bool,
    /// Session storage (`origins[].sessionStorage`, this crate's extension of the shape).
    pub session: bool,
}

impl Default for StoreKinds {
    /// Cookies and local storage (what Playwright's `storageState()` saves); session storage
    /// only when asked for.
    fn default() -> Self {
        Self {
            cookies: true,
            local: true,
            session: false,
        }
    }
}

impl StoreKinds {
    /// Parses `cookies,local,session` (any subset, in any order; empty keeps nothing).
    ///
    /// # Errors
    /// [`SessionError::Invalid`] naming the unknown part.
    pub fn parse(text: &str) -> Result<Self, SessionError> {
        let mut k = Self {
            cookies: false,
            local: false,
            session: false,
        };
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "cookies" => k.cookies = true,
                "local" => k.local = true,
                "session" => k.session = true,
                _ => {
                    return Err(SessionError::Invalid {
                        what: "stored kinds",
                        reason: "expected a list of cookies, local, session".into(),
                    })
                }
            }
        }
        Ok(k)
    }
}

/// Where a credential's outbound traffic goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "mode", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProxySetting {
    /// The workflow's default ([`resolve_proxy`]).
    #[default]
    Inherit,
    /// No proxy, whatever the workflow's default.
    Direct,
    /// Through the proxy an `http_proxy` credential holds (URL, user, password as a secret
    /// field like any other).
    Via(ProxyVia),
}

/// A proxy: the `http_proxy` credential that holds it, and hints for the automation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProxyVia {
    /// The `http_proxy` credential's name.
    pub credential: String,
    /// Its environment (the session's credential's own when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The exit IP the site should see (overrides the proxy credential's `target_ip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ip: Option<String>,
    /// A region hint (overrides the proxy credential's `region`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

impl ProxyVia {
    /// Through the proxy credential `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            credential: name.into(),
            environment: None,
            target_ip: None,
            region: None,
        }
    }

    /// In environment `env`.
    pub fn environment(mut self, env: impl Into<String>) -> Self {
        self.environment = Some(env.into());
        self
    }

    /// With an exit IP hint.
    pub fn target_ip(mut self, ip: impl Into<String>) -> Self {
        self.target_ip = Some(ip.into());
        self
    }

    /// With a region hint.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }
}

/// The proxy a credential's automation uses: the credential's own setting wins; `Inherit`
/// falls back to the workflow's default; `Direct` at either level (or nothing set anywhere)
/// means no proxy. A workflow default of `Inherit` is the same as none.
///
/// ```
/// use credvault_session::{resolve_proxy, ProxySetting, ProxyVia};
///
/// let workflow = ProxySetting::Via(ProxyVia::new("office-proxy"));
/// let own = ProxySetting::Via(ProxyVia::new("residential-de").region("de"));
/// assert_eq!(resolve_proxy(&own, Some(&workflow)).unwrap().credential, "residential-de");
/// assert_eq!(resolve_proxy(&ProxySetting::Inherit, Some(&workflow)).unwrap().credential, "office-proxy");
/// assert!(resolve_proxy(&ProxySetting::Direct, Some(&workflow)).is_none());
/// assert!(resolve_proxy(&ProxySetting::Inherit, None).is_none());
/// ```
pub fn resolve_proxy<'a>(
    credential: &'a ProxySetting,
    workflow_default: Option<&'a ProxySetting>,
) -> Option<&'a ProxyVia> {
    match credential {
        ProxySetting::Via(v) => Some(v),
        ProxySetting::Direct => None,
        ProxySetting::Inherit => match workflow_default {
            Some(ProxySetting::Via(v)) => Some(v),
            _ => None,
        },
    }
}

/// Longest idle or absolute lifetime: one year.
pub const MAX_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);

/// A credential's session settings. The default: several sessions at once, no limit on
/// concurrent runs, logins alone (the login lock), state kept 7 days after its last use and
/// 30 days after its login, cookies and local storage kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SessionConfig {
    /// Whether several `run` leases may be held at once.
    pub multiple: bool,
    /// At most this many `run` leases at once (`None`: no limit beyond `multiple`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Whether a `login` lease excludes every other lease ("prevent concurrency during
    /// login"). Without it, a `login` lease counts as a `run` lease.
    pub login_lock: bool,
    /// Saved state expires this long after its last use (milliseconds; `None`: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_ms: Option<u64>,
    /// Saved state expires this long after its login (milliseconds; `None`: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absolute_ms: Option<u64>,
    /// Which parts of the state are kept.
    pub store: StoreKinds,
    /// The credential's proxy.
    #[serde(default)]
    pub proxy: ProxySetting,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            multiple: true,
            max_concurrent: None,
            login_lock: true,
            idle_ms: Some(7 * 24 * 3600 * 1000),
            absolute_ms: Some(30 * 24 * 3600 * 1000),
            store: StoreKinds::default(),
            proxy: ProxySetting::Inherit,
        }
    }
}

impl SessionConfig {
    /// Whether several `run` leases may be held at once.
    pub fn multiple(mut self, yes: bool) -> Self {
        self.multiple = yes;
        self
    }

    /// At most `n` concurrent `run` leases (`None`: no limit).
    pub fn max_concurrent(mut self, n: Option<u32>) -> Self {
        self.max_concurrent = n;
        self
    }

    /// Whether a login excludes every other lease.
    pub fn login_lock(mut self, yes: bool) -> Self {
        self.login_lock = yes;
        self
    }

    /// Expiry after the last use (`None`: never).
    pub fn idle(mut self, d: Option<Duration>) -> Self {
        self.idle_ms = d.map(millis);
        self
    }

    /// Expiry after the login (`None`: never).
    pub fn absolute(mut self, d: Option<Duration>) -> Self {
        self.absolute_ms = d.map(millis);
        self
    }

    /// Which parts of the state are kept.
    pub fn store(mut self, kinds: StoreKinds) -> Self {
        self.store = kinds;
        self
    }

    /// The credential's proxy.
    pub fn proxy(mut self, p: ProxySetting) -> Self {
        self.proxy = p;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`SessionError::Invalid`] naming the setting.
    pub fn check(&self) -> Result<(), SessionError> {
        if self.max_concurrent == Some(0) {
            return Err(SessionError::Invalid {
                what: "max concurrent",
                reason: "must be at least 1 (none: no limit)".into(),
            });
        }
        let max = millis(MAX_LIFETIME);
        for (what, v) in [("idle", self.idle_ms), ("absolute", self.absolute_ms)] {
            if v.is_some_and(|v| v == 0 || v > max) {
                return Err(SessionError::Invalid {
                    what,
                    reason: "must be between 1 ms and 366 days (none: never)".into(),
                });
            }
        }
        if let ProxySetting::Via(v) = &self.proxy {
            if v.credential.is_empty() || v.credential.len() > 256 {
                return Err(SessionError::Invalid {
                    what: "proxy credential",
                    reason: "must be 1 to 256 bytes".into(),
                });
            }
        }
        Ok(())
    }

    /// How many `run` leases may be held at once.
    pub(crate) fn run_limit(&self) -> u64 {
        if !self.multiple {
            return 1;
        }
        self.max_concurrent.map_or(u64::MAX, u64::from)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Parses a duration such as `90s`, `15m`, `12h`, `7d` (or `none`: `None`).
///
/// # Errors
/// [`SessionError::Invalid`].
pub fn parse_duration(text: &str) -> Result<Option<Duration>, SessionError> {
    let t = text.trim();
    if t == "none" {
        return Ok(None);
    }
    let bad = || SessionError::Invalid {
        what: "duration",
        reason: "expected a number followed by s, m, h or d (90s, 15m, 12h, 7d), or none".into(),
    };
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60).ok_or_else(bad)?,
        "h" => n.checked_mul(3600).ok_or_else(bad)?,
        "d" => n.checked_mul(86_400).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    Ok(Some(Duration::from_secs(secs)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn kinds_and_durations_parse_and_refuse() {
        let k = StoreKinds::parse("session,cookies").unwrap();
        assert!(k.cookies && k.session && !k.local);
        assert!(StoreKinds::parse("cookies,flash").is_err());
        assert_eq!(
            parse_duration("15m").unwrap(),
            Some(Duration::from_secs(900))
        );
        assert_eq!(
            parse_duration("7d").unwrap(),
            Some(Duration::from_secs(604_800))
        );
        assert_eq!(parse_duration("none").unwrap(), None);
        for bad in ["", "m", "10", "10w", "-1s", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(SessionConfig::default()
            .max_concurrent(Some(0))
            .check()
            .is_err());
        assert!(SessionConfig::default()
            .idle(Some(Duration::from_secs(400 * 86_400)))
            .check()
            .is_err());
        assert_eq!(
            SessionConfig::default()
                .multiple(false)
                .max_concurrent(Some(5))
                .run_limit(),
            1
        );
        assert_eq!(
            SessionConfig::default().max_concurrent(Some(3)).run_limit(),
            3
        );
    }
}
