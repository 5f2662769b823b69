//! A raw HTTPS/1.1 client for tests against a real TLS server on a loopback port: it controls
//! the TLS server name, the `Host` header and every byte sent (what a library client would
//! correct), and a throwaway certificate authority (rcgen) to issue the server's certificates.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, ServerName};

/// A throwaway certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, to trust.
    pub der: CertificateDer<'static>,
    /// The same as PEM (for clients that read a CA file).
    pub pem: String,
}

impl Ca {
    /// A new CA named `name`.
    #[allow(clippy::unwrap_used)]
    pub fn new(name: &str) -> Self {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, name.to_owned());
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Self {
            der: cert.der().clone(),
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// A leaf for `names`: (certificate PEM, key PEM, certificate DER).
    #[allow(clippy::unwrap_used)]
    pub fn leaf(&self, names: &[&str]) -> (String, String, CertificateDer<'static>) {
        let p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().clone())
    }
}

/// A client of one server address, trusting one CA.
pub struct Client {
    /// The server.
    pub addr: SocketAddr,
    /// The CA it trusts.
    pub ca: CertificateDer<'static>,
}

impl Client {
    /// A rustls client configuration with only `versions`, trusting the CA.
    #[allow(clippy::unwrap_used)]
    pub fn config(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
        )
    }

    /// Opens a TLS connection for server name `sni`, handshake done (a refused handshake is
    /// the error).
    ///
    /// # Errors
    /// Connecting or the handshake failed.
    pub fn connect(
        &self,
        sni: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
        let tcp = TcpStream::connect(self.addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
        let name = ServerName::try_from(sni.to_owned()).map_err(std::io::Error::other)?;
        let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        let mut s = rustls::StreamOwned::new(conn, tcp);
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock)?;
        }
        Ok(s)
    }

    /// One HTTP/1.1 request over TLS 1.3 (`Connection: close`): `r.sni` in the handshake,
    /// `r.host` in the Host header. Panics on a connection error (it is a test's failure).
    #[allow(clippy::unwrap_used)]
    pub fn send(&self, r: Req<'_>) -> Resp {
        let mut s = self
            .connect(r.sni, self.config(&[&rustls::version::TLS13]))
            .unwrap();
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            r.method, r.path, r.host
        );
        if let Some(k) = r.key {
            head.push_str(&format!("Authorization: Bearer {k}\r\n"));
        }
        for (k, v) in &r.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = r.body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        head.push_str("\r\n");
        // Head and body in one write (one TLS record): a server that answers without reading
        // a body it does not need then has nothing unread when it closes, which would make
        // its kernel reset the connection under the answer.
        let mut all = head.into_bytes();
        if let Some(b) = r.body {
            all.extend_from_slice(b);
        }
        s.write_all(&all).unwrap();
        s.flush().unwrap();
        let mut raw = Vec::new();
        match s.read_to_end(&mut raw) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
            Err(e) => panic!("reading the response: {e}"),
        }
        Resp::parse(&raw)
    }
}

/// A request to make.
pub struct Req<'a> {
    /// TLS server name.
    pub sni: &'a str,
    /// Host header.
    pub host: &'a str,
    /// Method.
    pub method: &'a str,
    /// Path and query.
    pub path: &'a str,
    /// `Authorization: Bearer` value.
    pub key: Option<&'a str>,
    /// JSON body.
    pub body: Option<&'a [u8]>,
    /// More headers.
    pub headers: Vec<(&'a str, &'a str)>,
}

impl<'a> Req<'a> {
    /// A request on `host` (also the server name).
    pub fn new(host: &'a str, method: &'a str, path: &'a str) -> Self {
        Self {
            sni: host,
            host,
            method,
            path,
            key: None,
            body: None,
            headers: Vec::new(),
        }
    }

    /// Sets the bearer key.
    pub fn key(mut self, k: &'a str) -> Self {
        self.key = Some(k);
        self
    }

    /// Sets a JSON body.
    pub fn body(mut self, b: &'a [u8]) -> Self {
        self.body = Some(b);
        self
    }

    /// Sets a server name other than the host.
    pub fn sni(mut self, s: &'a str) -> Self {
        self.sni = s;
        self
    }

    /// Adds a header.
    pub fn header(mut self, k: &'a str, v: &'a str) -> Self {
        self.headers.push((k, v));
        self
    }
}

/// A response.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// Body (de-chunked).
    pub body: Vec<u8>,
}

impl Resp {
    #[allow(clippy::unwrap_used, clippy::expect_used)]
    fn parse(raw: &[u8]) -> Self {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response head");
        let head = std::str::from_utf8(&raw[..split]).unwrap();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        if headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
        {
            body = dechunk(&body);
        }
        Self {
            status,
            headers,
            body,
        }
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics if it is not).
    #[allow(clippy::unwrap_used)]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// The error code of an error body.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// The `x-request-id` header (panics if absent).
    #[allow(clippy::expect_used)]
    pub fn request_id(&self) -> String {
        self.header("x-request-id")
            .expect("x-request-id")
            .to_owned()
    }
}

#[allow(clippy::unwrap_used)]
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap().trim(), 16).unwrap();
        b = &b[nl + 2..];
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[..n]);
        b = &b[n + 2..];
    }
}

/// A plain HTTP/1.1 server on a loopback port for tests (an upstream, a webhook): each request
/// gets `200` with the body `answer` makes from the request's head (request line and headers,
/// lower-case names as clients send them), then the connection closes. Returns the port; the
/// server lives as long as the test process.
#[allow(clippy::unwrap_used)]
pub fn loopback_http(answer: impl Fn(&str) -> String + Send + 'static) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut b).unwrap_or(0) == 1 {
                head.push(b[0]);
            }
            let body = answer(&String::from_utf8_lossy(&head));
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}
