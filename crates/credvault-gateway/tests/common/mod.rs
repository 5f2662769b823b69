//! A real gateway on a loopback port over real TLS (rcgen certificates), and a raw TLS client
//! that controls the server name, the Host header and every byte sent.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use credvault_gateway::{
    serve, tls, Gateway, GatewayConfig, KeyPolicy, KeyStore, ServeOptions, ServerKey,
};
use credvault_store::{CredentialId, NewCredential, TenantId, Vault, VaultOptions};
pub use credvault_test::https::{Ca, Client, Req, Resp};

pub const HOSTS: [&str; 4] = [
    "acme.localhost",
    "globex.localhost",
    "unmapped.localhost",
    "127.0.0.1",
];
pub const PASSWORD: &str = "correct horse battery staple";
pub const TOTP_SEED: &str = "JBSWY3DPEHPK3PXPJBSWY3DP";
/// The Twilio auth token the harness's webhook verifies with.
pub const TWILIO_TOKEN: &str = "twilio-test-auth-token";

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub vault: Arc<Vault>,
    pub keys: Arc<KeyStore>,
    pub addr: SocketAddr,
    pub ca: Ca,
    pub cert: Arc<tls::ReloadingCert>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub stripe: CredentialId,
    pub github: CredentialId,
    pub globex_cred: CredentialId,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub fn tenant(t: &str) -> TenantId {
    TenantId::new(t).unwrap()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

impl Harness {
    pub fn start(cfg: impl FnOnce(GatewayConfig) -> GatewayConfig) -> Self {
        Self::start_with(cfg, ServeOptions::tls)
    }

    pub fn start_with(
        cfg: impl FnOnce(GatewayConfig) -> GatewayConfig,
        options: impl FnOnce(Arc<rustls::ServerConfig>) -> ServeOptions,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let vault =
            Arc::new(Vault::init(&dir.path().join("vault"), VaultOptions::default()).unwrap());
        let store = vault.store().clone();
        for t in ["acme", "globex"] {
            store.create_tenant(&tenant(t), t, "test").unwrap();
        }
        let acme = store.tenant(&tenant("acme"), "test").unwrap();
        let stripe = acme
            .create(NewCredential::new(
                "website_login",
                "stripe-live",
                serde_json::json!({
                    "login_url": "https://dashboard.stripe.example/login",
                    "username": "ops@acme.example",
                    "password": PASSWORD,
                    "totp_secret": TOTP_SEED,
                }),
            ))
            .unwrap()
            .id;
        let github = acme
            .create(NewCredential::new(
                "website_login",
                "github-prod",
                serde_json::json!({
                    "login_url": "https://github.example/login",
                    "username": "robot",
                    "password": "github password value",
                }),
            ))
            .unwrap()
            .id;
        let globex_cred = store
            .tenant(&tenant("globex"), "test")
            .unwrap()
            .create(NewCredential::new(
                "website_login",
                "stripe-live",
                serde_json::json!({
                    "login_url": "https://dashboard.stripe.example/login",
                    "username": "ops@globex.example",
                    "password": "globex password value",
                }),
            ))
            .unwrap()
            .id;

        let ca = Ca::new("credvault test CA");
        let (cert_pem, key_pem, _) = ca.leaf(&HOSTS);
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&cert_path, cert_pem).unwrap();
        std::fs::write(&key_path, key_pem).unwrap();
        let cert = tls::ReloadingCert::load(&cert_path, &key_path).unwrap();

        let keys = Arc::new(
            KeyStore::open(
                &dir.path().join("gateway.db"),
                ServerKey::load_or_create(&dir.path().join("gateway.key")).unwrap(),
            )
            .unwrap(),
        );
        let config = cfg(GatewayConfig::default()
            .host("acme.localhost", tenant("acme"))
            .unwrap()
            .host("globex.localhost", tenant("globex"))
            .unwrap());
        let gateway = Gateway::new(store.clone(), Arc::clone(&keys), config);
        let vault_dir = dir.path().join("vault");
        gateway.set_sessions(
            Arc::new(credvault_session::Sessions::open_in(&vault_dir, store.clone()).unwrap()),
            Arc::new(credvault_tfa::Tfa::open_in(&vault_dir, store).unwrap()),
            Some(zeroize::Zeroizing::new(TWILIO_TOKEN.as_bytes().to_vec())),
        );
        let reader = Arc::clone(&vault);
        gateway.set_audit_reader(Arc::new(move |q| reader.audit_events(q)));
        let router = gateway.router();
        let options = options(tls::server_config(Arc::clone(&cert), false).unwrap());

        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                serve(listener, router, options, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        Self {
            dir,
            vault,
            keys,
            addr,
            ca,
            cert,
            cert_path,
            key_path,
            stripe,
            github,
            globex_cred,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// A key's text for `policy`.
    pub fn key(&self, policy: KeyPolicy) -> String {
        self.keys
            .create(policy, now_ms())
            .unwrap()
            .expose()
            .to_owned()
    }

    /// A client of this gateway, trusting its CA.
    pub fn client(&self) -> Client {
        Client {
            addr: self.addr,
            ca: self.ca.der.clone(),
        }
    }

    pub fn client_config(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        self.client().config(versions)
    }

    pub fn connect(
        &self,
        sni: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>> {
        self.client().connect(sni, config)
    }

    pub fn send(&self, r: Req<'_>) -> Resp {
        self.client().send(r)
    }

    /// The one `request` record with this request id (a second, or none, fails the test).
    pub fn request_record(&self, id: &str) -> credvault_store::audit::AuditEvent {
        use credvault_store::audit::{Action, Query};
        let found: Vec<_> = self
            .vault
            .audit_events(&Query::new().action(Action::Request))
            .unwrap()
            .events
            .into_iter()
            .map(|e| e.event)
            .filter(|e| e.request_id.as_deref() == Some(id))
            .collect();
        assert_eq!(found.len(), 1, "exactly one request record for {id}");
        found.into_iter().next().unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
