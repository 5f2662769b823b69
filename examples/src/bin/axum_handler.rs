//! An axum service that shares one `Store` across its handlers and never returns a secret:
//! `POST /webhooks/{name}/sign` signs the request body with the credential's secret
//! (HMAC-SHA256, as webhook senders do) and returns only the signature. The store's calls are
//! blocking (SQLite, fsync), so handlers run them on `spawn_blocking`; the `Store` is a cheap
//! `Clone + Send + Sync + 'static` handle, so the state holds it directly.
//!
//! Run: `cargo run -p credvault-examples --bin axum_handler` (serves on 127.0.0.1, sends
//! itself one request, prints the answer and shuts down gracefully).

use std::error::Error;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use credvault_store::{NewCredential, Store, StoreError, TenantId, Vault, VaultOptions};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone)]
struct AppState {
    store: Store,
    tenant: TenantId,
}

async fn sign(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: String,
) -> Result<String, (StatusCode, String)> {
    tokio::task::spawn_blocking(move || {
        let scope = app.store.tenant(&app.tenant, "webhook-service")?;
        let info = scope.find(&name, "production")?;
        let secret = scope.reveal(&info.id, &["token"], Some("webhook-signer"))?;
        let key = ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            secret.expose_secret("token").unwrap_or_default().as_bytes(),
        );
        Ok::<_, StoreError>(hex::encode(ring::hmac::sign(&key, body.as_bytes())))
    })
    .await
    .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| match e {
        StoreError::NotFound { .. } => (StatusCode::NOT_FOUND, e.to_string()),
        StoreError::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        // Never echo more than the store's message, which holds no secret.
        e => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let vault = Vault::open_or_init(&dir.path().join("vault"), VaultOptions::default())?;
    let tenant = TenantId::new("acme")?;
    vault.store().create_tenant(&tenant, "Acme", "admin")?;
    vault
        .store()
        .tenant(&tenant, "admin")?
        .create(NewCredential::new(
            "http_bearer_token",
            "orders-hook",
            json!({"token": "whsec_9f1c2a7d4e8b"}),
        ))?;

    let app = Router::new()
        .route("/webhooks/{name}/sign", post(sign))
        .with_state(AppState {
            store: vault.store().clone(),
            tenant,
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });

    // A client, in plain HTTP/1.1 so the example needs no client library.
    let body = r#"{"order":42}"#;
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    conn.write_all(
        format!(
            "POST /webhooks/orders-hook/sign HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await?;
    let signature = answer.rsplit("\r\n\r\n").next().unwrap_or_default();
    let want = hex::encode(ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"whsec_9f1c2a7d4e8b"),
        body.as_bytes(),
    ));
    if !answer.starts_with("HTTP/1.1 200") || signature != want || answer.contains("whsec_") {
        return Err(format!("unexpected answer: {answer}").into());
    }
    println!("signed the webhook body; the service answered with the signature only: {signature}");

    let _ = stop.send(());
    server.await??;
    vault.close()?;
    Ok(())
}
