//! PostgreSQL: connecting (creating the database), migrations, LISTEN.

pub mod bulk;
pub mod dialect;
pub mod facts;
pub mod log;
pub mod notify;
pub mod rebuild;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use std::str::FromStr;

/// Connects to `url`, creating the database when it does not exist yet.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(url).context("TACHO_DATABASE_URL is not a valid postgres:// URL")?;
    let database = options.get_database().unwrap_or("postgres").to_owned();
    let mut admin = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {}", redact(url)))?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&database)
        .fetch_one(&mut admin)
        .await
        .context("cannot list databases")?;
    if !exists {
        let quoted = database.replace('"', "\"\"");
        sqlx::query(&format!("CREATE DATABASE \"{quoted}\""))
            .execute(&mut admin)
            .await
            .or_else(|e| if is_duplicate(&e) { Ok(Default::default()) } else { Err(e) })
            .with_context(|| format!("cannot create database {database}"))?;
    }
    admin.close().await.ok();
    PgPoolOptions::new()
        .max_connections(max_connections)
        .connect_with(options)
        .await
        .with_context(|| format!("cannot open a pool to {}", redact(url)))
}

fn is_duplicate(e: &sqlx::Error) -> bool {
    e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c == "42P04" || c == "23505")
}

/// Applies the migrations in `migrations/postgres`.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::migrate!("./migrations/postgres").run(pool).await.context("cannot apply migrations")
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}
