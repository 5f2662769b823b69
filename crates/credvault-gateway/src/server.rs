//! The accept loop: TLS (or clear HTTP on loopback only), HTTP/1.1 and HTTP/2, time limits on
//! the handshake and on request headers, and a graceful shutdown that lets requests in flight
//! finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// What the gateway knows of a connection: handed to every request on it.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The TLS server name the client asked for (SNI), lower-case; `None` over clear HTTP or
    /// when the client sent none.
    pub sni: Option<String>,
    /// Whether the connection is TLS (the setup page's cookie is `Secure` then).
    pub tls: bool,
}

/// How to serve.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServeOptions {
    /// TLS; `None` serves clear HTTP, which [`serve`] allows on a loopback address only.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Longest TLS handshake (default 10 s).
    pub handshake_timeout: Duration,
    /// Longest wait for a request's headers (default 10 s): a slow client is dropped.
    pub header_timeout: Duration,
    /// How long requests in flight may take to finish after shutdown begins (default 30 s).
    pub grace: Duration,
}

impl ServeOptions {
    /// Over TLS.
    pub fn tls(config: Arc<rustls::ServerConfig>) -> Self {
        Self {
            tls: Some(config),
            ..Self::insecure_http()
        }
    }

    /// Clear HTTP (loopback only).
    pub fn insecure_http() -> Self {
        Self {
            tls: None,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            grace: Duration::from_secs(30),
        }
    }

    /// Sets the header timeout.
    pub fn header_timeout(mut self, t: Duration) -> Self {
        self.header_timeout = t;
        self
    }

    /// Sets the handshake timeout.
    pub fn handshake_timeout(mut self, t: Duration) -> Self {
        self.handshake_timeout = t;
        self
    }

    /// Sets the shutdown grace period.
    pub fn grace(mut self, t: Duration) -> Self {
        self.grace = t;
        self
    }
}

/// Serving failed to start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// Clear HTTP was asked for on an address that is not loopback.
    #[error(
        "clear HTTP is served on loopback addresses only (asked for {0}); give a TLS certificate"
    )]
    InsecureNotLoopback(SocketAddr),
    /// The listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves `router` on `listener` until `shutdown` completes, then waits up to
/// `options.grace` for requests in flight.
///
/// # Errors
/// [`ServeError::InsecureNotLoopback`] before accepting anything.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let local = listener.local_addr()?;
    if options.tls.is_none() && !local.ip().is_loopback() {
        return Err(ServeError::InsecureNotLoopback(local));
    }
    let acceptor = options.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        let handshake_timeout = options.handshake_timeout;
        tokio::spawn(async move {
            match acceptor {
                Some(acceptor) => {
                    let tls =
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    let sni = tls.get_ref().1.server_name().map(str::to_ascii_lowercase);
                    let info = ConnInfo {
                        peer,
                        sni,
                        tls: true,
                    };
                    let conn = builder.serve_connection(TokioIo::new(tls), service(router, info));
                    let _ = watcher.watch(conn.into_owned()).await;
                }
                None => {
                    let info = ConnInfo {
                        peer,
                        sni: None,
                        tls: false,
                    };
                    let conn = builder.serve_connection(TokioIo::new(tcp), service(router, info));
                    let _ = watcher.watch(conn.into_owned()).await;
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(options.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; connections still open were dropped");
    }
    Ok(())
}

fn service(
    router: Router,
    info: ConnInfo,
) -> hyper_util::service::TowerToHyperService<
    impl tower::Service<
            axum::http::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
            Future = impl Send,
        > + Clone,
> {
    hyper_util::service::TowerToHyperService::new(tower::service_fn(
        move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(info.clone());
            router.clone().oneshot(req.map(axum::body::Body::new))
        },
    ))
}
