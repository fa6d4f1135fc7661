//! One statement for either store: portable SQL (`$n` placeholders, `ON CONFLICT`, row values,
//! `RETURNING`) is written once and run on whichever backend is open.
//!
//! ```text
//! Sql::new("UPDATE rm_vehicles SET status = $2 WHERE vin = $1").bind(vin).bind(status).execute(&mut conn).await?;
//! let rows: Vec<(String, i64)> = Sql::new("SELECT ...").fetch_all(&db).await?;
//! ```
//!
//! Each argument is encoded for both drivers (the statement does not know yet where it runs), so a
//! value must have a type both understand; what only one dialect can say lives in
//! [`super::postgres`] and [`super::sqlite`].

use super::{Conn, Db};
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Arguments, Encode, FromRow, PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool, Type};

/// A value both drivers can bind.
pub trait Bind<'q>:
    'q + Clone + Send + Encode<'q, Postgres> + Type<Postgres> + Encode<'q, Sqlite> + Type<Sqlite>
{
}
impl<'q, T> Bind<'q> for T where
    T: 'q + Clone + Send + Encode<'q, Postgres> + Type<Postgres> + Encode<'q, Sqlite> + Type<Sqlite>
{
}

/// A row both drivers can read.
pub trait Row: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin {}
impl<T> Row for T where T: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin {}

/// Where a statement runs: a pool, or a connection (of a transaction or borrowed from a pool).
pub enum On<'a> {
    /// A PostgreSQL pool.
    PgPool(&'a PgPool),
    /// A PostgreSQL connection.
    Pg(&'a mut PgConnection),
    /// The SQLite pool.
    SqlitePool(&'a SqlitePool),
    /// A SQLite connection.
    Sqlite(&'a mut SqliteConnection),
}

impl<'a> From<&'a Db> for On<'a> {
    fn from(db: &'a Db) -> Self {
        match db {
            Db::Postgres(pool) => Self::PgPool(pool),
            Db::Sqlite(embedded) => Self::SqlitePool(&embedded.pool),
        }
    }
}

impl<'a, 'c: 'a> From<&'a mut Conn<'c>> for On<'a> {
    fn from(conn: &'a mut Conn<'c>) -> Self {
        match conn {
            Conn::Postgres(c) => Self::Pg(c),
            Conn::Sqlite(c) => Self::Sqlite(c),
        }
    }
}

/// A statement and its arguments, encoded for both drivers.
pub struct Sql<'q> {
    sql: &'q str,
    pg: Result<PgArguments, BoxDynError>,
    sqlite: Result<SqliteArguments<'q>, BoxDynError>,
}

/// Builds the statement with `sqlx::$build` for whichever driver `$on` is and runs `.$run` on it.
macro_rules! run {
    ($self:ident, $on:expr, $build:ident, $run:ident) => {
        run!($self, $on, $build, $run, |done| done)
    };
    ($self:ident, $on:expr, $build:ident, $run:ident, |$done:ident| $then:expr) => {
        match $on.into() {
            On::PgPool(p) => {
                sqlx::$build($self.sql, $self.pg.map_err(sqlx::Error::Encode)?).$run(p).await.map(|$done| $then)
            }
            On::Pg(c) => {
                sqlx::$build($self.sql, $self.pg.map_err(sqlx::Error::Encode)?).$run(c).await.map(|$done| $then)
            }
            On::SqlitePool(p) => {
                sqlx::$build($self.sql, $self.sqlite.map_err(sqlx::Error::Encode)?).$run(p).await.map(|$done| $then)
            }
            On::Sqlite(c) => {
                sqlx::$build($self.sql, $self.sqlite.map_err(sqlx::Error::Encode)?).$run(c).await.map(|$done| $then)
            }
        }
    };
}

impl<'q> Sql<'q> {
    /// The statement `sql`, with no arguments yet.
    pub fn new(sql: &'q str) -> Self {
        Self { sql, pg: Ok(PgArguments::default()), sqlite: Ok(SqliteArguments::default()) }
    }

    /// Binds the next `$n`.
    pub fn bind<T: Bind<'q>>(mut self, value: T) -> Self {
        if let Ok(args) = &mut self.pg {
            if let Err(e) = args.add(value.clone()) {
                self.pg = Err(e);
            }
        }
        if let Ok(args) = &mut self.sqlite {
            if let Err(e) = args.add(value) {
                self.sqlite = Err(e);
            }
        }
        self
    }

    /// Runs it; the number of rows it changed.
    pub async fn execute<'a>(self, on: impl Into<On<'a>>) -> Result<u64, sqlx::Error> {
        run!(self, on, query_with, execute, |done| done.rows_affected())
    }

    /// Every row.
    pub async fn fetch_all<'a, R: Row>(self, on: impl Into<On<'a>>) -> Result<Vec<R>, sqlx::Error> {
        run!(self, on, query_as_with, fetch_all)
    }

    /// The first row, if any.
    pub async fn fetch_optional<'a, R: Row>(self, on: impl Into<On<'a>>) -> Result<Option<R>, sqlx::Error> {
        run!(self, on, query_as_with, fetch_optional)
    }

    /// The first row; `RowNotFound` when there is none.
    pub async fn fetch_one<'a, R: Row>(self, on: impl Into<On<'a>>) -> Result<R, sqlx::Error> {
        run!(self, on, query_as_with, fetch_one)
    }

    /// The first column of every row.
    pub async fn scalars<'a, T>(self, on: impl Into<On<'a>>) -> Result<Vec<T>, sqlx::Error>
    where
        (T,): Row,
        T: Send + Unpin,
    {
        run!(self, on, query_scalar_with, fetch_all)
    }

    /// The first column of the first row, if any.
    pub async fn scalar_optional<'a, T>(self, on: impl Into<On<'a>>) -> Result<Option<T>, sqlx::Error>
    where
        (T,): Row,
        T: Send + Unpin,
    {
        run!(self, on, query_scalar_with, fetch_optional)
    }

    /// The first column of the first row; `RowNotFound` when there is none.
    pub async fn scalar<'a, T>(self, on: impl Into<On<'a>>) -> Result<T, sqlx::Error>
    where
        (T,): Row,
        T: Send + Unpin,
    {
        run!(self, on, query_scalar_with, fetch_one)
    }
}
