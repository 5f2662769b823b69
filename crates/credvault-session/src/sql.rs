//! The small SQL layer the session and two-factor records share: a SQLite file beside the
//! vault, or the vault's PostgreSQL database (feature `postgres`), behind one interface.
//! Statements use `$1, $2, ...` placeholders (rewritten to `?1, ?2, ...` for SQLite) and the
//! SQL both accept (`INSERT ... ON CONFLICT ... DO UPDATE`, `RETURNING`, `LIMIT`).
//!
//! Writes are serialised across every process of the vault: SQLite's write lock
//! (`BEGIN IMMEDIATE`), or a transaction-scoped advisory lock on PostgreSQL.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// A value bound to a statement or read from a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Val {
    /// SQL NULL (bound as a text NULL).
    Null,
    /// A 64-bit integer.
    Int(i64),
    /// Text.
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
}

/// Turns a Rust value into a [`Val`] (for [`vals!`](crate::vals)).
pub trait ToVal {
    /// The value.
    fn to_val(&self) -> Val;
}

impl ToVal for i64 {
    fn to_val(&self) -> Val {
        Val::Int(*self)
    }
}

impl ToVal for str {
    fn to_val(&self) -> Val {
        Val::Text(self.to_owned())
    }
}

impl ToVal for String {
    fn to_val(&self) -> Val {
        Val::Text(self.clone())
    }
}

impl ToVal for [u8] {
    fn to_val(&self) -> Val {
        Val::Bytes(self.to_vec())
    }
}

impl ToVal for Vec<u8> {
    fn to_val(&self) -> Val {
        Val::Bytes(self.clone())
    }
}

impl<T: ToVal + ?Sized> ToVal for &T {
    fn to_val(&self) -> Val {
        (**self).to_val()
    }
}

impl<T: ToVal> ToVal for Option<T> {
    fn to_val(&self) -> Val {
        self.as_ref().map_or(Val::Null, ToVal::to_val)
    }
}

/// The parameters of a statement: `vals![a, b, c]` is `&[Val]` of each (taken by reference).
#[macro_export]
macro_rules! vals {
    ($($x:expr),* $(,)?) => {
        &[$($crate::sql::ToVal::to_val(&$x)),*][..]
    };
}

/// A failure of the database: the server's or SQLite's words, never a bound value.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DbError(pub String);

/// Reads a column of a [`Row`] as a Rust value.
pub trait FromVal: Sized {
    /// The value, or an error naming the column.
    ///
    /// # Errors
    /// [`DbError`] when the column holds another type.
    fn from_val(v: &Val, col: usize) -> Result<Self, DbError>;
}

fn wrong(col: usize, want: &str) -> DbError {
    DbError(format!("column {col}: expected {want}"))
}

impl FromVal for i64 {
    fn from_val(v: &Val, col: usize) -> Result<Self, DbError> {
        match v {
            Val::Int(i) => Ok(*i),
            _ => Err(wrong(col, "an integer")),
        }
    }
}

impl FromVal for String {
    fn from_val(v: &Val, col: usize) -> Result<Self, DbError> {
        match v {
            Val::Text(t) => Ok(t.clone()),
            _ => Err(wrong(col, "text")),
        }
    }
}

impl FromVal for Vec<u8> {
    fn from_val(v: &Val, col: usize) -> Result<Self, DbError> {
        match v {
            Val::Bytes(b) => Ok(b.clone()),
            _ => Err(wrong(col, "bytes")),
        }
    }
}

impl<T: FromVal> FromVal for Option<T> {
    fn from_val(v: &Val, col: usize) -> Result<Self, DbError> {
        match v {
            Val::Null => Ok(None),
            other => T::from_val(other, col).map(Some),
        }
    }
}

/// One row of a result.
#[derive(Clone, Debug)]
pub struct Row(Vec<Val>);

impl Row {
    /// Column `col` as a `T`.
    ///
    /// # Errors
    /// [`DbError`] when there is no such column or it holds another type.
    pub fn get<T: FromVal>(&self, col: usize) -> Result<T, DbError> {
        let v = self
            .0
            .get(col)
            .ok_or_else(|| DbError(format!("no column {col}")))?;
        T::from_val(v, col)
    }
}

/// Statements inside one transaction.
pub trait Tx {
    /// Runs a statement; the rows it changed.
    ///
    /// # Errors
    /// [`DbError`].
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64, DbError>;

    /// Runs a query; its rows.
    ///
    /// # Errors
    /// [`DbError`].
    fn rows(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Row>, DbError>;

    /// Runs a query; its first row, if any.
    ///
    /// # Errors
    /// [`DbError`].
    fn row(&mut self, sql: &str, params: &[Val]) -> Result<Option<Row>, DbError> {
        Ok(self.rows(sql, params)?.into_iter().next())
    }
}

// ---- SQLite ----

fn sqlite_err(e: rusqlite::Error) -> DbError {
    // rusqlite's messages name tables and constraints, never bound values.
    DbError(e.to_string())
}

/// `$N` placeholders as SQLite's `?N`.
fn sqlite_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Self::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Self::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Self::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
            Self::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

struct SqliteTx<'a>(&'a rusqlite::Connection);

impl Tx for SqliteTx<'_> {
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64, DbError> {
        let n = self
            .0
            .prepare_cached(&sqlite_sql(sql))
            .and_then(|mut st| st.execute(rusqlite::params_from_iter(params)))
            .map_err(sqlite_err)?;
        Ok(n as u64)
    }

    fn rows(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Row>, DbError> {
        use rusqlite::types::ValueRef;
        let mut st = self
            .0
            .prepare_cached(&sqlite_sql(sql))
            .map_err(sqlite_err)?;
        let n = st.column_count();
        let rows = st
            .query_map(rusqlite::params_from_iter(params), |r| {
                let mut vals = Vec::with_capacity(n);
                for i in 0..n {
                    vals.push(match r.get_ref(i)? {
                        ValueRef::Null => Val::Null,
                        ValueRef::Integer(v) => Val::Int(v),
                        ValueRef::Real(v) => Val::Text(v.to_string()),
                        ValueRef::Text(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
                        ValueRef::Blob(b) => Val::Bytes(b.to_vec()),
                    });
                }
                Ok(Row(vals))
            })
            .map_err(sqlite_err)?;
        rows.collect::<Result<_, _>>().map_err(sqlite_err)
    }
}

// ---- PostgreSQL ----

#[cfg(feature = "postgres")]
mod pg {
    use super::{DbError, Row, Tx, Val};
    use credvault_store::postgres::client::types::{ToSql, Type};
    use credvault_store::postgres::client::{Client, Transaction};

    pub(super) fn err(e: credvault_store::postgres::client::Error) -> DbError {
        DbError(credvault_store::postgres::classify(e).to_string())
    }

    pub(super) struct PgTx<'a>(pub(super) Transaction<'a>);

    fn params(p: &[Val]) -> Vec<Box<dyn ToSql + Sync>> {
        p.iter()
            .map(|v| -> Box<dyn ToSql + Sync> {
                match v {
                    Val::Null => Box::new(None::<String>),
                    Val::Int(i) => Box::new(*i),
                    Val::Text(t) => Box::new(t.clone()),
                    Val::Bytes(b) => Box::new(b.clone()),
                }
            })
            .collect()
    }

    fn read(r: &credvault_store::postgres::client::Row) -> Result<Row, DbError> {
        let mut out = Vec::with_capacity(r.len());
        for (i, c) in r.columns().iter().enumerate() {
            let t = c.type_();
            let v = if *t == Type::INT8 {
                r.try_get::<_, Option<i64>>(i).map_err(err)?.map(Val::Int)
            } else if *t == Type::INT4 {
                r.try_get::<_, Option<i32>>(i)
                    .map_err(err)?
                    .map(|v| Val::Int(i64::from(v)))
            } else if *t == Type::BYTEA {
                r.try_get::<_, Option<Vec<u8>>>(i)
                    .map_err(err)?
                    .map(Val::Bytes)
            } else if *t == Type::BOOL {
                r.try_get::<_, Option<bool>>(i)
                    .map_err(err)?
                    .map(|b| Val::Int(i64::from(b)))
            } else {
                r.try_get::<_, Option<String>>(i)
                    .map_err(err)?
                    .map(Val::Text)
            };
            out.push(v.unwrap_or(Val::Null));
        }
        Ok(Row(out))
    }

    impl Tx for PgTx<'_> {
        fn exec(&mut self, sql: &str, p: &[Val]) -> Result<u64, DbError> {
            let boxed = params(p);
            let refs: Vec<&(dyn ToSql + Sync)> = boxed.iter().map(AsRef::as_ref).collect();
            self.0.execute(sql, &refs).map_err(err)
        }

        fn rows(&mut self, sql: &str, p: &[Val]) -> Result<Vec<Row>, DbError> {
            let boxed = params(p);
            let refs: Vec<&(dyn ToSql + Sync)> = boxed.iter().map(AsRef::as_ref).collect();
            self.0
                .query(sql, &refs)
                .map_err(err)?
                .iter()
                .map(read)
                .collect()
        }
    }

    pub(super) struct Pg {
        pub(super) url: String,
        pub(super) options: credvault_store::PostgresOptions,
        pub(super) client: std::sync::Mutex<Option<Client>>,
        pub(super) lock: i64,
    }

    impl Pg {
        /// Runs `f` in a transaction on the connection, made again when it broke.
        pub(super) fn with<T, E: From<DbError>>(
            &self,
            exclusive: bool,
            f: impl FnOnce(&mut dyn Tx) -> Result<T, E>,
        ) -> Result<T, E> {
            let mut guard = self
                .client
                .lock()
                .map_err(|_| DbError("a thread panicked holding the connection".into()))?;
            if guard.as_ref().is_none_or(Client::is_closed) {
                *guard = Some(
                    credvault_store::postgres::connect_one(&self.url, &self.options)
                        .map_err(|e| DbError(e.to_string()))?,
                );
            }
            let client = guard
                .as_mut()
                .ok_or_else(|| DbError("no connection".into()))?;
            let mut tx = PgTx(client.transaction().map_err(err)?);
            if exclusive {
                tx.0.execute("SELECT pg_advisory_xact_lock($1)", &[&self.lock])
                    .map_err(err)?;
            }
            let out = f(&mut tx)?;
            tx.0.commit().map_err(err)?;
            Ok(out)
        }
    }
}

enum Backend {
    Sqlite(Mutex<rusqlite::Connection>),
    #[cfg(feature = "postgres")]
    Postgres(Box<pg::Pg>),
}

/// A database for the records: SQLite or PostgreSQL.
pub struct Db {
    backend: Backend,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.backend {
            Backend::Sqlite(_) => "Db(sqlite)",
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => "Db(postgres)",
        })
    }
}

impl Db {
    /// Opens (creating when missing, owner-only) the SQLite file at `path` (WAL, full
    /// synchronous, removed rows overwritten), and runs `schema` (its `CREATE ... IF NOT
    /// EXISTS` statements).
    ///
    /// # Errors
    /// [`DbError`].
    pub fn sqlite(path: &Path, schema: &str) -> Result<Self, DbError> {
        if !path.exists() {
            match credvault_store::files::write_new_private(path, b"") {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(DbError(e.to_string()))
                }
                _ => {}
            }
        }
        let conn = rusqlite::Connection::open(path).map_err(sqlite_err)?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(sqlite_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sqlite_err)?;
        conn.pragma_update(None, "secure_delete", "ON")
            .map_err(sqlite_err)?;
        conn.execute_batch(schema).map_err(sqlite_err)?;
        Ok(Self {
            backend: Backend::Sqlite(Mutex::new(conn)),
        })
    }

    /// Connects to the PostgreSQL database `url` names, with the vault's own connection checks
    /// (`credvault_store::postgres::connect_one`: no password in the URL, TLS except on
    /// loopback, the schema of `options`), and runs `schema` when one of `tables` is missing
    /// (under advisory lock `lock`, which also serialises every later write). A node whose
    /// role may not create anything opens tables that are there.
    ///
    /// # Errors
    /// [`DbError`].
    #[cfg(feature = "postgres")]
    pub fn postgres(
        url: &str,
        options: &credvault_store::PostgresOptions,
        schema: &str,
        tables: &[&str],
        lock: i64,
    ) -> Result<Self, DbError> {
        let pg = pg::Pg {
            url: url.to_owned(),
            options: options.clone(),
            client: Mutex::new(None),
            lock,
        };
        let schema_name = options.schema.clone();
        pg.with(true, |tx| -> Result<(), DbError> {
            if let Some(s) = &schema_name {
                if tx
                    .row(
                        "SELECT 1 FROM pg_namespace WHERE nspname = $1",
                        crate::vals![s],
                    )?
                    .is_none()
                {
                    // The name was checked when the connection was made: letters, digits, '_'.
                    tx.exec(&format!("CREATE SCHEMA IF NOT EXISTS \"{s}\""), &[])?;
                }
            }
            let mut missing = false;
            for t in tables {
                missing |= tx
                    .row("SELECT 1 WHERE to_regclass($1) IS NULL", crate::vals![*t])?
                    .is_some();
            }
            if missing {
                for stmt in schema.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                    tx.exec(stmt, &[])?;
                }
            }
            Ok(())
        })?;
        Ok(Self {
            backend: Backend::Postgres(Box::new(pg)),
        })
    }

    /// Whether this is a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        !matches!(self.backend, Backend::Sqlite(_))
    }

    fn run<T, E: From<DbError>>(
        &self,
        exclusive: bool,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        match &self.backend {
            Backend::Sqlite(m) => {
                let mut conn = m
                    .lock()
                    .map_err(|_| DbError("a thread panicked holding the connection".into()))?;
                let behavior = if exclusive {
                    rusqlite::TransactionBehavior::Immediate
                } else {
                    rusqlite::TransactionBehavior::Deferred
                };
                let tx = conn
                    .transaction_with_behavior(behavior)
                    .map_err(sqlite_err)?;
                let out = f(&mut SqliteTx(&tx))?;
                tx.commit().map_err(sqlite_err)?;
                Ok(out)
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres(pg) => pg.with(exclusive, f),
        }
    }

    /// Runs `f` in a write transaction, serialised with every other writer of every process;
    /// committed when `f` returns `Ok`, rolled back otherwise.
    ///
    /// # Errors
    /// `f`'s, or [`DbError`] converted.
    pub fn write<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        self.run(true, f)
    }

    /// Runs `f` in a read transaction.
    ///
    /// # Errors
    /// `f`'s, or [`DbError`] converted.
    pub fn read<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        self.run(false, f)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_become_sqlites() {
        assert_eq!(
            super::sqlite_sql("a = $1 AND b = $12 AND c = '$'"),
            "a = ?1 AND b = ?12 AND c = '$'"
        );
    }
}
