//! A local HTTP server for tests that must see whether (and what) the vault sent: it answers
//! every request with one fixed response and keeps each request's head.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

/// A server on `127.0.0.1` (an OS-chosen port) that records the head of every request it
/// receives. Stopped when dropped.
pub struct Listener {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Answers `200 {}`.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub fn start() -> Self {
        Self::answering(200, "{}")
    }

    /// Answers `status` with the JSON `body`.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    #[allow(clippy::expect_used)]
    pub fn answering(status: u16, body: &str) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = l.local_addr().expect("the bound address").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let response = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let (seen, halt) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for c in l.incoming() {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut c) = c else { continue };
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while let Ok(n) = c.read(&mut buf) {
                    got.extend_from_slice(&buf[..n]);
                    if n == 0 || got.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                seen.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(String::from_utf8_lossy(&got).into_owned());
                let _ = c.write_all(response.as_bytes());
            }
        });
        Self {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many connections it has answered.
    pub fn hits(&self) -> usize {
        self.requests().len()
    }

    /// The heads (request line and headers) of the requests received so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
