//! API key records in PostgreSQL: table `gateway_api_keys` beside a vault kept there, so that
//! every gateway node shares them. The records and their MACs are the same as in SQLite;
//! only the statements differ.

use std::sync::Mutex;

use credvault_store::postgres::client::{Client, Row};
use credvault_store::postgres::{classify, connect_one};
use credvault_store::PostgresOptions;

use crate::apikey::{KeyError, Stored};

/// Taken while the table is created, so that nodes starting at once do it once.
const CREATE_LOCK: i64 = 0x6376_6761_7465_6b79; // "cvgateky"

/// One connection (made again when it broke) behind a mutex.
pub(crate) struct PgTable {
    url: String,
    options: PostgresOptions,
    client: Mutex<Option<Client>>,
}

fn err(e: credvault_store::StorageError) -> KeyError {
    KeyError::Storage(e.to_string())
}

fn read(r: &Row) -> Result<Stored, KeyError> {
    let get = |e: credvault_store::postgres::client::Error| err(classify(e));
    Ok(Stored {
        id: r.try_get(0).map_err(get)?,
        body: r.try_get(1).map_err(get)?,
        hash: r.try_get(2).map_err(get)?,
        created_at: r.try_get(3).map_err(get)?,
        revoked_at: r.try_get(4).map_err(get)?,
        mac: r.try_get(5).map_err(get)?,
        last_used_at: r.try_get(6).map_err(get)?,
        last_ip: r.try_get(7).map_err(get)?,
    })
}

const COLUMNS: &str = "id, body, hash, created_at, revoked_at, mac, last_used_at, last_ip";

impl PgTable {
    pub(crate) fn open(url: &str, options: &PostgresOptions) -> Result<Self, KeyError> {
        let t = Self {
            url: url.to_owned(),
            options: options.clone(),
            client: Mutex::new(None),
        };
        let schema = options.schema.clone();
        t.with(|c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CREATE_LOCK])?;
            // The vault makes its schema; a key store opened first makes it too (the name was
            // checked when the connection was made: letters, digits and '_').
            if let Some(schema) = &schema {
                let exists = tx
                    .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[schema])?
                    .is_some();
                if !exists {
                    tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))?;
                }
            }
            // Created only when missing: a node whose role may not create anything (the
            // documented grants) opens a table that is there.
            let missing = tx
                .query_one("SELECT to_regclass('gateway_api_keys') IS NULL", &[])?
                .get::<_, bool>(0);
            if missing {
                tx.batch_execute(
                    r#"CREATE TABLE IF NOT EXISTS gateway_api_keys (
                    id TEXT COLLATE "C" PRIMARY KEY,
                    body TEXT NOT NULL,
                    hash BYTEA NOT NULL,
                    created_at BIGINT NOT NULL,
                    revoked_at BIGINT,
                    mac BYTEA NOT NULL,
                    last_used_at BIGINT,
                    last_ip TEXT
                )"#,
                )?;
            }
            tx.commit()
        })?;
        Ok(t)
    }

    /// Runs `f` on the connection, connecting first when there is none or it broke; a call
    /// that fails because the connection was lost is tried once more on a new one.
    fn with<T>(
        &self,
        f: impl Fn(&mut Client) -> Result<T, credvault_store::postgres::client::Error>,
    ) -> Result<T, KeyError> {
        let mut guard = self.client.lock().unwrap_or_else(|p| p.into_inner());
        for attempt in 0..2 {
            if guard.as_ref().is_none_or(Client::is_closed) {
                *guard = Some(connect_one(&self.url, &self.options).map_err(err)?);
            }
            let Some(c) = guard.as_mut() else { break };
            match f(c) {
                Ok(v) => return Ok(v),
                Err(e) if attempt == 0 && (e.is_closed() || c.is_closed()) => *guard = None,
                Err(e) => return Err(err(classify(e))),
            }
        }
        Err(KeyError::Storage(
            "database: the connection was lost".into(),
        ))
    }

    pub(crate) fn insert(&self, r: &Stored) -> Result<(), KeyError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO gateway_api_keys (id, body, hash, created_at, revoked_at, mac) \
                 VALUES ($1, $2, $3, $4, NULL, $5)",
                &[&r.id, &r.body, &r.hash, &r.created_at, &r.mac],
            )
        })
        .map(|_| ())
    }

    pub(crate) fn one(&self, id: &str) -> Result<Option<Stored>, KeyError> {
        let row = self.with(|c| {
            c.query_opt(
                &format!("SELECT {COLUMNS} FROM gateway_api_keys WHERE id = $1"),
                &[&id],
            )
        })?;
        row.as_ref().map(read).transpose()
    }

    pub(crate) fn all(&self) -> Result<Vec<Stored>, KeyError> {
        let rows = self.with(|c| {
            c.query(
                &format!("SELECT {COLUMNS} FROM gateway_api_keys ORDER BY created_at, id"),
                &[],
            )
        })?;
        rows.iter().map(read).collect()
    }

    pub(crate) fn used(&self, id: &str, now: i64, ip: &str) -> Result<(), KeyError> {
        self.with(|c| {
            c.execute(
                "UPDATE gateway_api_keys SET last_used_at = $2, last_ip = $3 WHERE id = $1",
                &[&id, &now, &ip],
            )
        })
        .map(|_| ())
    }

    pub(crate) fn revoke(&self, id: &str, now: i64, mac: &[u8]) -> Result<(), KeyError> {
        self.with(|c| {
            c.execute(
                "UPDATE gateway_api_keys SET revoked_at = $2, mac = $3 \
                 WHERE id = $1 AND revoked_at IS NULL",
                &[&id, &now, &mac],
            )
        })
        .map(|_| ())
    }
}
