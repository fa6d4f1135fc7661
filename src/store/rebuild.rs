//! Fresh copies of read-model tables, filled on a connection of their own and then swapped in,
//! while the API keeps answering from the live tables (the filling is
//! [`crate::projections::rebuild`]'s).
//!
//! The read model's SQL names its tables unqualified; on the rebuild's connection those names
//! resolve to the fresh copies: PostgreSQL puts them in schema `tacho_rebuild` first on the
//! `search_path`, SQLite makes them TEMP tables (searched before `main`).

use super::{checkpoints, postgres, sqlite, Conn, Db, Sql};
use sqlx::{ConnectOptions, PgConnection, SqliteConnection};

/// A connection of its own (never returned to a pool: its name resolution is changed).
pub enum Rebuilding {
    /// PostgreSQL, holding the read model's rebuild lock until it closes.
    Postgres(PgConnection),
    /// SQLite.
    Sqlite(SqliteConnection),
}

impl Rebuilding {
    /// Opens the connection for rebuilding read model `name`; on PostgreSQL it waits until no other
    /// instance rebuilds it (they would share `tacho_rebuild`).
    pub async fn open(db: &Db, name: &str) -> Result<Self, sqlx::Error> {
        Ok(match db {
            Db::Postgres(pool) => {
                let mut conn: PgConnection = pool.connect_options().connect().await?;
                checkpoints::hold_rebuild(&mut conn, name).await?;
                Self::Postgres(conn)
            }
            Db::Sqlite(embedded) => Self::Sqlite(embedded.pool.connect_options().connect().await?),
        })
    }

    /// The connection.
    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            Self::Postgres(c) => Conn::Postgres(c),
            Self::Sqlite(c) => Conn::Sqlite(c),
        }
    }

    /// Empty copies of `tables` (columns, keys, indexes) where the read model's SQL on this
    /// connection will find them.
    pub async fn fresh_tables(&mut self, tables: &[&str]) -> Result<(), sqlx::Error> {
        match self {
            Self::Postgres(c) => postgres::rebuild::fresh_tables(c, tables).await,
            Self::Sqlite(c) => sqlite::rebuild::fresh_tables(c, tables).await,
        }
    }

    /// Begins a transaction (`write`: one that swaps, which on SQLite takes the write lock first).
    pub async fn begin(&mut self, write: bool) -> Result<Conn<'_>, sqlx::Error> {
        let begin = match (&self, write) {
            (Self::Sqlite(_), true) => "BEGIN IMMEDIATE",
            _ => "BEGIN",
        };
        let mut conn = self.conn();
        Sql::new(begin).execute(&mut conn).await?;
        Ok(conn)
    }
}

/// Replaces the live `tables` with the rebuilt ones (inside the transaction `conn` is in).
pub async fn swap(conn: &mut Conn<'_>, tables: &[&str]) -> Result<(), sqlx::Error> {
    match conn {
        Conn::Postgres(c) => postgres::rebuild::swap(c, tables).await,
        Conn::Sqlite(c) => sqlite::rebuild::swap(c, tables).await,
    }
}

/// Rolls back the transaction `conn` is in.
pub async fn rollback(conn: Conn<'_>) -> Result<(), sqlx::Error> {
    let mut conn = conn;
    Sql::new("ROLLBACK").execute(&mut conn).await?;
    Ok(())
}

/// Commits the transaction `conn` is in.
pub async fn commit(mut conn: Conn<'_>) -> Result<(), sqlx::Error> {
    Sql::new("COMMIT").execute(&mut conn).await?;
    Ok(())
}
