//! The SMTP receiver: takes mail for credentials' addresses (loopback, or TLS with STARTTLS).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mailin::{response, Action, Handler, Response, SessionBuilder};

use crate::{address_token, Outcome, Tfa, TfaError, MAX_EMAIL_LEN};

/// Longest SMTP command or data line accepted (RFC 5321 §4.5.3.1.6: 1,000 with CRLF; some
/// senders go past it in data, so data lines get more room).
pub const MAX_LINE_LEN: usize = 4096;
/// Most connections served at once; more are answered 421 and closed.
pub const MAX_CONNECTIONS: usize = 32;
/// Most recipients of one message.
pub const MAX_RECIPIENTS: usize = 16;
/// A connection idle this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// An SMTP receiver for [`Tfa`]: each message's recipients that are credentials' addresses
/// get its code ([`Tfa::receive_email`]). Listens on a loopback address in the clear, or on
/// any address with STARTTLS offered and required before `MAIL`.
pub struct SmtpReceiver {
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    tfa: Arc<Tfa>,
    name: String,
}

impl std::fmt::Debug for SmtpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpReceiver")
            .field("addr", &self.listener.local_addr().ok())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// What a received message goes to: its bytes and recipients in, the reply out.
type Sink = Arc<dyn Fn(&[u8], &[String]) -> Response + Send + Sync>;

struct Collect {
    sink: Sink,
    rcpts: Vec<String>,
    data: Vec<u8>,
    too_big: bool,
    tls_required: bool,
    /// Set by the connection once STARTTLS completed (the handler does not see it).
    tls_active: Arc<std::sync::atomic::AtomicBool>,
}

impl Handler for Collect {
    fn mail(&mut self, _ip: IpAddr, _domain: &str, _from: &str) -> Response {
        if self.tls_required && !self.tls_active.load(Ordering::SeqCst) {
            return Response::custom(530, "Must issue a STARTTLS command first".into());
        }
        self.rcpts.clear();
        response::OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        if self.rcpts.len() >= MAX_RECIPIENTS {
            return Response::custom(452, "Too many recipients".into());
        }
        if address_token(to).is_none() {
            return response::NO_MAILBOX;
        }
        self.rcpts.push(to.to_owned());
        response::OK
    }

    fn data_start(
        &mut self,
        _domain: &str,
        _from: &str,
        _is8bit: bool,
        _to: &[String],
    ) -> Response {
        zeroize::Zeroize::zeroize(&mut self.data);
        self.data.clear();
        self.too_big = false;
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if self.data.len() + buf.len() > MAX_EMAIL_LEN {
            self.too_big = true;
        } else {
            self.data.extend_from_slice(buf);
        }
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let out = if self.too_big {
            response::NO_STORAGE
        } else {
            (self.sink)(&self.data, &self.rcpts)
        };
        zeroize::Zeroize::zeroize(&mut self.data);
        self.data.clear();
        out
    }
}

/// Reads one line (through `\n`) of at most [`MAX_LINE_LEN`] bytes; `Ok(false)` at the end.
fn read_line(r: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<bool> {
    line.clear();
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(!line.is_empty());
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > MAX_LINE_LEN {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "line too long",
            ));
        }
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if done {
            return Ok(true);
        }
    }
}

enum Next {
    Done,
    StartTls,
}

fn converse<S: Read + Write>(
    session: &mut mailin::Session<Collect>,
    stream: &mut BufReader<S>,
) -> std::io::Result<Next> {
    let mut line = Vec::with_capacity(128);
    loop {
        if !read_line(stream, &mut line)? {
            return Ok(Next::Done);
        }
        let res = session.process(&line);
        if res.action != Action::NoReply {
            res.write_to(stream.get_mut())?;
            stream.get_mut().flush()?;
        }
        match res.action {
            Action::Close => return Ok(Next::Done),
            Action::UpgradeTls => return Ok(Next::StartTls),
            _ => {}
        }
    }
}

impl SmtpReceiver {
    /// Binds `addr`. Without `tls` the address must be a loopback one (mail in the clear
    /// stays on the machine, behind a local MTA that relays to it); with it, STARTTLS is
    /// offered and required before a message.
    ///
    /// # Errors
    /// [`TfaError::Receiver`] (a non-loopback address without TLS, or the bind failed).
    pub fn bind(
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        tfa: Arc<Tfa>,
    ) -> Result<Self, TfaError> {
        if tls.is_none() && !addr.ip().is_loopback() {
            return Err(TfaError::Receiver(format!(
                "the SMTP receiver listens on {addr} only with TLS (a certificate); without one, use a loopback address"
            )));
        }
        let listener = TcpListener::bind(addr)
            .map_err(|e| TfaError::Receiver(format!("cannot listen on {addr}: {e}")))?;
        Ok(Self {
            listener,
            tls,
            tfa,
            name: "credvault".into(),
        })
    }

    /// The address it listens on.
    ///
    /// # Errors
    /// [`TfaError::Receiver`].
    pub fn local_addr(&self) -> Result<SocketAddr, TfaError> {
        self.listener
            .local_addr()
            .map_err(|e| TfaError::Receiver(e.to_string()))
    }

    /// Serves on a thread of its own (one thread per connection, at most
    /// [`MAX_CONNECTIONS`]) until the process ends.
    ///
    /// # Errors
    /// [`TfaError::Receiver`] when the thread cannot start.
    pub fn spawn(self) -> Result<std::thread::JoinHandle<()>, TfaError> {
        std::thread::Builder::new()
            .name("credvault-smtp".into())
            .spawn(move || self.serve())
            .map_err(|e| TfaError::Receiver(e.to_string()))
    }

    fn serve(self) {
        let open = Arc::new(AtomicUsize::new(0));
        let mut builder = SessionBuilder::new(self.name.clone());
        if self.tls.is_some() {
            builder.enable_start_tls();
        }
        let builder = Arc::new(builder);
        for conn in self.listener.incoming() {
            let Ok(mut stream) = conn else { continue };
            if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                open.fetch_sub(1, Ordering::SeqCst);
                let _ = stream.write_all(b"421 Too many connections, try again later\r\n");
                continue;
            }
            let (open, builder, tls, tfa) = (
                open.clone(),
                builder.clone(),
                self.tls.clone(),
                self.tfa.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name("credvault-smtp-conn".into())
                .spawn(move || {
                    let _ = handle(stream, &builder, tls, tfa);
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            if spawned.is_err() {
                // The connection was dropped with its closure; nothing else holds its slot.
            }
        }
    }
}

fn handle(
    stream: TcpStream,
    builder: &SessionBuilder,
    tls: Option<Arc<rustls::ServerConfig>>,
    tfa: Arc<Tfa>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    let remote = stream.peer_addr()?.ip();
    let tls_active = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sink: Sink = Arc::new(move |data, rcpts| match tfa.receive_email(data, rcpts) {
        Ok(outcomes) if outcomes.iter().any(|o| !matches!(o, Outcome::NoRoute)) => response::OK,
        Ok(_) => response::NO_MAILBOX,
        Err(TfaError::Invalid { .. }) => response::TRANSACTION_FAILED,
        Err(_) => response::INTERNAL_ERROR,
    });
    let handler = Collect {
        sink,
        rcpts: Vec::new(),
        data: Vec::new(),
        too_big: false,
        tls_required: tls.is_some(),
        tls_active: tls_active.clone(),
    };
    let mut session = builder.build(remote, handler);
    let mut plain = BufReader::new(stream);
    session.greeting().write_to(plain.get_mut())?;
    if let Next::StartTls = converse(&mut session, &mut plain)? {
        let Some(cfg) = tls else { return Ok(()) };
        if !plain.buffer().is_empty() {
            // Commands pipelined after STARTTLS are an injection attempt (CVE-2011-0411).
            return Ok(());
        }
        let conn =
            rustls::ServerConnection::new(cfg).map_err(|e| std::io::Error::other(e.to_string()))?;
        let tls_stream = rustls::StreamOwned::new(conn, plain.into_inner());
        session.tls_active();
        tls_active.store(true, Ordering::SeqCst);
        let mut secure = BufReader::new(tls_stream);
        converse(&mut session, &mut secure)?;
    }
    Ok(())
}

/// A client's bytes as one plain conversation with a receiver whose messages go nowhere (for
/// the fuzz target): the line reader, the SMTP state machine and the handler's limits.
pub(crate) fn fuzz_conversation(input: &[u8]) {
    struct Duplex<'a> {
        input: &'a [u8],
        out: Vec<u8>,
    }
    impl Read for Duplex<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.input.read(buf)
        }
    }
    impl Write for Duplex<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            // Replies are bounded: the conversation ends at the input's end.
            if self.out.len() < 1 << 20 {
                self.out.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut builder = SessionBuilder::new("fuzz");
    builder.enable_start_tls();
    let handler = Collect {
        sink: Arc::new(|data, rcpts| {
            assert!(
                data.len() <= MAX_EMAIL_LEN,
                "no message past the limit is kept"
            );
            assert!(
                rcpts.len() <= MAX_RECIPIENTS,
                "no more recipients than the limit"
            );
            let _ = crate::tfa::parse_email(data);
            response::OK
        }),
        rcpts: Vec::new(),
        data: Vec::new(),
        too_big: false,
        tls_required: false,
        tls_active: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    let mut session = builder.build(IpAddr::from([127, 0, 0, 1]), handler);
    let mut stream = BufReader::new(Duplex {
        input,
        out: Vec::new(),
    });
    let _ = converse(&mut session, &mut stream);
}
