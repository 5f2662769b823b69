//! Outbound network policy: which addresses the vault may connect to on a credential's behalf.
//!
//! A credential tester (and, later, the proxy) sends a secret to a URL that comes from stored
//! fields. Without a policy, whoever can create a credential can make the vault send its
//! request to `http://169.254.169.254/` (cloud metadata), to `127.0.0.1` (the vault host's
//! own services) or into a private network. The policy here is decided on the *resolved*
//! addresses, and the connection is then made to exactly those addresses (no second DNS
//! lookup a rebinding server could answer differently).
//!
//! ```
//! use std::net::IpAddr;
//! use credvault_store::net::{classify, AddressClass, NetworkPolicy};
//!
//! let metadata: IpAddr = "169.254.169.254".parse()?;
//! assert_eq!(classify(metadata), AddressClass::LinkLocal);
//! // IPv4 hidden in IPv6 is classified as the IPv4 address it carries.
//! assert_eq!(classify("::ffff:127.0.0.1".parse()?), AddressClass::Loopback);
//!
//! let policy = NetworkPolicy::public_only();
//! assert!(policy.permits(metadata).is_err());
//! assert!(policy.allow(AddressClass::LinkLocal).permits(metadata).is_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

/// What kind of network an address belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AddressClass {
    /// A global unicast address: always permitted.
    Public,
    /// `127.0.0.0/8`, `::1`: the vault host itself.
    Loopback,
    /// `10/8`, `172.16/12`, `192.168/16`, `100.64/10` (carrier-grade NAT), `fc00::/7`
    /// (unique local), `fec0::/10` (site-local), `64:ff9b:1::/48` (local NAT64).
    Private,
    /// `169.254/16` (where cloud metadata services listen), `fe80::/10`.
    LinkLocal,
    /// Unspecified (`0.0.0.0` and `::` reach the local host on Linux), multicast, broadcast,
    /// documentation, benchmarking, `0/8`, `240/4`, Teredo and other special-purpose ranges:
    /// never permitted.
    Reserved,
}

impl AddressClass {
    /// The name used in messages and settings: `public`, `loopback`, `private`, `link-local`,
    /// `reserved`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link-local",
            Self::Reserved => "reserved",
        }
    }
}

impl std::fmt::Display for AddressClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses the classes a setting can allow: `loopback`, `private`, `link-local` (public is
/// always allowed and reserved never is, so neither is accepted).
impl std::str::FromStr for AddressClass {
    type Err = UnknownClass;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "loopback" => Self::Loopback,
            "private" => Self::Private,
            "link-local" => Self::LinkLocal,
            _ => return Err(UnknownClass),
        })
    }
}

/// An address class name that is not one a setting can allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown address class (expected loopback, private or link-local)")]
pub struct UnknownClass;

/// The class of `ip`. IPv4 addresses carried in IPv6 (mapped `::ffff:a.b.c.d`, NAT64
/// `64:ff9b::/96`, 6to4 `2002::/16`) are classified as the IPv4 address they carry.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        (127, _, _) => AddressClass::Loopback,
        (10, _, _) | (192, 168, _) => AddressClass::Private,
        (172, 16..=31, _) | (100, 64..=127, _) => AddressClass::Private,
        (169, 254, _) => AddressClass::LinkLocal,
        (0, _, _) | (224..=255, _, _) => AddressClass::Reserved,
        (192, 0, 0) | (192, 0, 2) | (192, 88, 99) | (198, 51, 100) | (203, 0, 113) => {
            AddressClass::Reserved
        }
        (198, 18..=19, _) => AddressClass::Reserved,
        _ => AddressClass::Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        classify_v4(Ipv4Addr::new(a, b, c, d))
    };
    match s {
        [0, 0, 0, 0, 0, 0, 0, 1] => AddressClass::Loopback,
        // Unspecified, and the deprecated IPv4-compatible ::a.b.c.d.
        [0, 0, 0, 0, 0, 0, _, _] => AddressClass::Reserved,
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => embedded(hi, lo),
        [0x64, 0xff9b, 1, ..] => AddressClass::Private,
        [0x2002, hi, lo, ..] => embedded(hi, lo),
        // Teredo tunnels anywhere; documentation; discard-only.
        [0x2001, 0, ..] | [0x2001, 0xdb8, ..] | [0x100, 0, 0, 0, ..] => AddressClass::Reserved,
        [x, ..] if x & 0xfe00 == 0xfc00 => AddressClass::Private,
        [x, ..] if x & 0xffc0 == 0xfec0 => AddressClass::Private,
        [x, ..] if x & 0xffc0 == 0xfe80 => AddressClass::LinkLocal,
        [x, ..] if x & 0xff00 == 0xff00 => AddressClass::Reserved,
        _ => AddressClass::Public,
    }
}

/// Which address classes outbound requests may reach, and whether plain `http://` is allowed
/// to loopback. The default, [`public_only`](Self::public_only), permits public addresses
/// only, and plain HTTP only to loopback when loopback is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkPolicy {
    loopback: bool,
    private: bool,
    link_local: bool,
    plain_http_to_loopback: bool,
}

impl Default for NetworkPolicy {
    fn default() -> Self {
        Self::public_only()
    }
}

impl NetworkPolicy {
    /// Public addresses only.
    pub fn public_only() -> Self {
        Self {
            loopback: false,
            private: false,
            link_local: false,
            plain_http_to_loopback: true,
        }
    }

    /// Also permits `class`. [`AddressClass::Reserved`] cannot be allowed (this is a no-op
    /// for it) and [`AddressClass::Public`] always is.
    #[must_use]
    pub fn allow(mut self, class: AddressClass) -> Self {
        match class {
            AddressClass::Loopback => self.loopback = true,
            AddressClass::Private => self.private = true,
            AddressClass::LinkLocal => self.link_local = true,
            AddressClass::Public | AddressClass::Reserved => {}
        }
        self
    }

    /// Refuses plain `http://` even to loopback.
    #[must_use]
    pub fn https_only(mut self) -> Self {
        self.plain_http_to_loopback = false;
        self
    }

    /// Whether a connection to `ip` is permitted; the refused class otherwise.
    ///
    /// # Errors
    /// The address's class when the policy does not permit it.
    pub fn permits(&self, ip: IpAddr) -> Result<(), AddressClass> {
        let class = classify(ip);
        let ok = match class {
            AddressClass::Public => true,
            AddressClass::Loopback => self.loopback,
            AddressClass::Private => self.private,
            AddressClass::LinkLocal => self.link_local,
            AddressClass::Reserved => false,
        };
        if ok {
            Ok(())
        } else {
            Err(class)
        }
    }
}

/// Turns a host name into addresses. [`SystemResolver`] asks the operating system; tests and
/// embedders with their own DNS plug in another.
pub trait Resolve: Send + Sync {
    /// The addresses of `host` (a DNS name, never an IP literal) at `port`.
    ///
    /// # Errors
    /// Whatever the lookup fails with.
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>>;
}

/// The operating system's resolver (`getaddrinfo`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok((host, port).to_socket_addrs()?.collect())
    }
}

#[cfg(feature = "net")]
pub use destination::{all_loopback, resolve_checked, Destination, Refused};

#[cfg(feature = "net")]
mod destination {
    use std::net::{IpAddr, SocketAddr};

    use url::{Host, Url};

    use super::{classify, AddressClass, NetworkPolicy, Resolve};

    /// Why a URL may not be connected to. The messages never quote the URL (its path or
    /// query may hold a secret).
    #[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
    #[non_exhaustive]
    pub enum Refused {
        /// The URL does not parse.
        #[error("the URL does not parse")]
        Unparsable,
        /// Neither `http` nor `https`.
        #[error("the URL is not an http(s) URL")]
        Scheme,
        /// The URL has a user name or password: credentials go in the type's `authenticate`
        /// block, and user info is a classic way to make a URL read as another host.
        #[error("the URL has user info (user:password@); put credentials in `authenticate`")]
        UserInfo,
        /// No port is known for the URL.
        #[error("the URL has no port")]
        NoPort,
        /// The host name did not resolve.
        #[error("the host does not resolve")]
        Unresolved,
        /// The host resolves to an address the policy refuses.
        #[error("the host is a {0} address, which this vault does not connect to")]
        Address(AddressClass),
        /// Plain HTTP to anything but loopback.
        #[error("plain http to a non-loopback host")]
        PlainHttp,
    }

    /// Resolves `host` once and checks every address against `policy` (one refused address
    /// refuses the host): what a connection on a credential's behalf may then use, and
    /// nothing else. `host` is a DNS name or an IP literal (`[v6]` or bare), which is not
    /// resolved.
    ///
    /// # Errors
    /// [`Refused::Unresolved`], [`Refused::Address`], or [`Refused::Unparsable`] for an empty
    /// host.
    pub fn resolve_checked(
        host: &str,
        port: u16,
        policy: &NetworkPolicy,
        resolver: &dyn Resolve,
    ) -> Result<Vec<SocketAddr>, Refused> {
        let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        if let Ok(ip) = literal.unwrap_or(host).parse::<IpAddr>() {
            return checked(vec![ip], port, policy);
        }
        if host.is_empty() || literal.is_some() {
            return Err(Refused::Unparsable);
        }
        let ips = resolver
            .resolve(host, port)
            .map_err(|_| Refused::Unresolved)?
            .into_iter()
            .map(|a| a.ip())
            .collect();
        checked(ips, port, policy)
    }

    fn checked(
        ips: Vec<IpAddr>,
        port: u16,
        policy: &NetworkPolicy,
    ) -> Result<Vec<SocketAddr>, Refused> {
        if ips.is_empty() {
            return Err(Refused::Unresolved);
        }
        for &ip in &ips {
            policy.permits(ip).map_err(Refused::Address)?;
        }
        Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }

    /// Whether every address is on the vault's own host.
    pub fn all_loopback(addrs: &[SocketAddr]) -> bool {
        addrs
            .iter()
            .all(|a| classify(a.ip()) == AddressClass::Loopback)
    }

    /// A URL whose host has been resolved and checked against a [`NetworkPolicy`]: connect to
    /// [`addrs`](Self::addrs) and nothing else. The URL may carry a secret (a key in its
    /// query): `Debug` shows only scheme, host and port, and the URL's text is wiped on drop.
    #[derive(Clone)]
    pub struct Destination {
        url: WipedUrl,
        addrs: Vec<SocketAddr>,
    }

    /// A URL whose text is wiped when dropped.
    #[derive(Clone)]
    struct WipedUrl(Url);

    impl Drop for WipedUrl {
        fn drop(&mut self) {
            if let Ok(blank) = Url::parse("data:,") {
                let mut text: String = std::mem::replace(&mut self.0, blank).into();
                zeroize::Zeroize::zeroize(&mut text);
            }
        }
    }

    impl std::fmt::Debug for Destination {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Destination")
                .field("scheme", &self.url.0.scheme())
                .field("host", &self.url.0.host_str())
                .field("port", &self.url.0.port_or_known_default())
                .field("addrs", &self.addrs)
                .finish_non_exhaustive()
        }
    }

    impl Destination {
        /// Parses `raw` with the WHATWG URL parser (the one the HTTP client uses, so the host
        /// checked is the host connected to), resolves its host once with `resolver` (an IP
        /// literal is not resolved) and checks every address: one refused address refuses the
        /// URL.
        ///
        /// # Errors
        /// [`Refused`], saying why.
        pub fn check(
            raw: &str,
            policy: &NetworkPolicy,
            resolver: &dyn Resolve,
        ) -> Result<Self, Refused> {
            let wiped = WipedUrl(Url::parse(raw).map_err(|_| Refused::Unparsable)?);
            let url = &wiped.0;
            let https = match url.scheme() {
                "https" => true,
                "http" => false,
                _ => return Err(Refused::Scheme),
            };
            if !url.username().is_empty() || url.password().is_some() {
                return Err(Refused::UserInfo);
            }
            let port = url.port_or_known_default().ok_or(Refused::NoPort)?;
            let addrs = match url.host() {
                Some(Host::Ipv4(ip)) => checked(vec![IpAddr::V4(ip)], port, policy)?,
                Some(Host::Ipv6(ip)) => checked(vec![IpAddr::V6(ip)], port, policy)?,
                Some(Host::Domain(name)) => resolve_checked(name, port, policy, resolver)?,
                None => return Err(Refused::Unparsable),
            };
            let plain_ok = policy.plain_http_to_loopback && all_loopback(&addrs);
            if !(https || plain_ok) {
                return Err(Refused::PlainHttp);
            }
            Ok(Self { url: wiped, addrs })
        }

        /// The parsed URL.
        pub fn url(&self) -> &Url {
            &self.url.0
        }

        /// The checked addresses, with the URL's port.
        pub fn addrs(&self) -> &[SocketAddr] {
            &self.addrs
        }

        /// `host:port` as an HTTP client names the connection (`[v6]:port` for IPv6).
        pub fn netloc(&self) -> String {
            format!(
                "{}:{}",
                self.url.0.host_str().unwrap_or_default(),
                self.addrs.first().map_or(0, SocketAddr::port)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    #[cfg(feature = "net")]
    #[allow(clippy::unwrap_used)]
    fn a_destinations_debug_shows_no_path_or_query() {
        let d = Destination::check(
            "https://93.184.215.14:8443/v1/charges?api_key=sk-live-debug-0001#frag",
            &NetworkPolicy::public_only(),
            &SystemResolver,
        )
        .unwrap();
        let shown = format!("{d:?}");
        assert!(
            shown.contains("93.184.215.14") && shown.contains("8443"),
            "{shown}"
        );
        for hidden in ["sk-live-debug-0001", "api_key", "/v1/charges", "frag"] {
            assert!(!shown.contains(hidden), "{hidden} in {shown}");
        }
        assert_eq!(d.url().query(), Some("api_key=sk-live-debug-0001"));
        let copy = d.clone();
        drop(d);
        assert_eq!(copy.url().path(), "/v1/charges");
    }

    #[test]
    #[cfg(feature = "net")]
    #[allow(clippy::unwrap_used)]
    fn hosts_are_checked_as_ip_literals_bare_or_bracketed() {
        let public = NetworkPolicy::public_only();
        let local = public.allow(AddressClass::Loopback);
        let check = |h: &str, p: &NetworkPolicy| resolve_checked(h, 22, p, &SystemResolver);
        assert_eq!(
            check("127.0.0.1", &public),
            Err(Refused::Address(AddressClass::Loopback))
        );
        assert_eq!(
            check("[::ffff:169.254.169.254]", &local),
            Err(Refused::Address(AddressClass::LinkLocal))
        );
        let v6: Vec<SocketAddr> = vec!["[::1]:22".parse().unwrap()];
        assert_eq!(check("[::1]", &local).unwrap(), v6);
        assert_eq!(check("::1", &local).unwrap(), v6);
        assert_eq!(
            check("8.8.8.8", &public).unwrap(),
            vec!["8.8.8.8:22".parse::<SocketAddr>().unwrap()]
        );
        for bad in ["", "[]", "[not-an-ip]"] {
            assert_eq!(check(bad, &local), Err(Refused::Unparsable), "{bad:?}");
        }
    }

    #[test]
    fn classes() {
        use AddressClass::*;
        for (ip, want) in [
            ("8.8.8.8", Public),
            ("1.1.1.1", Public),
            ("172.32.0.1", Public),
            ("100.128.0.1", Public),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("10.1.2.3", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.0.1", Private),
            ("100.64.0.1", Private),
            ("169.254.169.254", LinkLocal),
            ("0.0.0.0", Reserved),
            ("0.1.2.3", Reserved),
            ("255.255.255.255", Reserved),
            ("224.0.0.1", Reserved),
            ("240.0.0.1", Reserved),
            ("192.0.2.2", Reserved),
            ("198.18.0.1", Reserved),
            ("::1", Loopback),
            ("::", Reserved),
            ("::127.0.0.1", Reserved),
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:169.254.169.254", LinkLocal),
            ("64:ff9b::7f00:1", Loopback),
            ("64:ff9b::808:808", Public),
            ("64:ff9b:1::1", Private),
            ("2002:7f00:1::", Loopback),
            ("2002:a00:1::", Private),
            ("2001::1", Reserved),
            ("2001:db8::1", Reserved),
            ("fc00::1", Private),
            ("fd12:3456::1", Private),
            ("fec0::1", Private),
            ("fe80::1", LinkLocal),
            ("ff02::1", Reserved),
            ("2606:4700::1111", Public),
        ] {
            assert_eq!(classify(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn policy_allows_what_it_is_told_and_never_reserved() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let zero: IpAddr = "0.0.0.0".parse().unwrap();
        let p = NetworkPolicy::public_only();
        assert_eq!(p.permits(lo), Err(AddressClass::Loopback));
        let p = p
            .allow(AddressClass::Loopback)
            .allow(AddressClass::Reserved);
        assert!(p.permits(lo).is_ok());
        assert_eq!(p.permits(zero), Err(AddressClass::Reserved));
        assert_eq!(
            p.permits("10.0.0.1".parse().unwrap()),
            Err(AddressClass::Private)
        );
        for c in ["loopback", "private", "link-local"] {
            assert_eq!(c.parse::<AddressClass>().unwrap().as_str(), c);
        }
        for bad in ["lan", "public", "reserved", "Loopback"] {
            assert!(bad.parse::<AddressClass>().is_err(), "{bad}");
        }
    }

    proptest! {
        /// An IPv4 address hidden in IPv6 (mapped, NAT64, 6to4) never changes class.
        #[test]
        fn ipv4_in_ipv6_keeps_its_class(raw in any::<u32>()) {
            let v4 = Ipv4Addr::from(raw);
            let want = classify_v4(v4);
            let [a, b, c, d] = v4.octets();
            let hi = u16::from_be_bytes([a, b]);
            let lo = u16::from_be_bytes([c, d]);
            prop_assert_eq!(classify(IpAddr::V6(v4.to_ipv6_mapped())), want);
            prop_assert_eq!(classify(IpAddr::V6(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo))), want);
            prop_assert_eq!(classify(IpAddr::V6(Ipv6Addr::new(0x2002, hi, lo, 0, 0, 0, 0, 1))), want);
        }
    }
}
