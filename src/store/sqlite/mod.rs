//! SQLite, the embedded default: opening the file (WAL, one tacho per file), migrations.

pub mod bulk;
pub mod dialect;
pub mod facts;
pub mod log;
pub mod rebuild;

use super::Embedded;
use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// The file a `sqlite://PATH` (or `sqlite:PATH`) URL names.
pub fn path_of(url: &str) -> anyhow::Result<PathBuf> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .context("TACHO_DATABASE_URL is not a sqlite:// URL")?;
    let path = path.split('?').next().unwrap_or_default();
    anyhow::ensure!(!path.is_empty() && path != ":memory:", "TACHO_DATABASE_URL must name a file: sqlite://PATH");
    Ok(PathBuf::from(path))
}

/// Who opens the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A running tacho: one at a time (a lock file), as it owns the subscribers and the broker.
    Exclusive,
    /// A maintenance command (`audit verify`, `projections rebuild`), which may run beside it:
    /// SQLite's own locking keeps their transactions apart.
    Shared,
}

/// Opens (creating it and its folder when missing) the SQLite file of `url`. With
/// [`Access::Exclusive`], refuses when another tacho holds it.
pub async fn connect(url: &str, max_connections: u32, access: Access) -> anyhow::Result<Embedded> {
    let path = path_of(url)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create the data folder {}", dir.display()))?;
    }
    anyhow::ensure!(
        access == Access::Exclusive || path.exists(),
        "there is no tacho data at {} (check TACHO_DATABASE_URL and the working folder)",
        path.display()
    );
    let lock = match access {
        Access::Exclusive => Some(lock(&path)?),
        Access::Shared => None,
    };
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .context("TACHO_DATABASE_URL is not a valid sqlite:// URL")?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // WAL with NORMAL: a commit survives a crash of tacho; a power cut may lose the last ones.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(30))
        .foreign_keys(false);
    let pool = SqlitePoolOptions::new()
        .max_connections(max_connections.clamp(2, 16))
        .connect_with(options)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    Ok(Embedded::new(pool, lock))
}

/// Takes `PATH.lock` for as long as the returned file is open.
fn lock(path: &Path) -> anyhow::Result<std::fs::File> {
    let lock_path = PathBuf::from(format!("{}.lock", path.display()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another tacho is using {} (the embedded store takes one process); stop it, or choose another \
             file with TACHO_DATABASE_URL=sqlite://PATH",
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", lock_path.display())),
    }
}

/// Applies the migrations in `migrations/sqlite`.
pub async fn migrate(embedded: &Embedded) -> anyhow::Result<()> {
    sqlx::migrate!("./migrations/sqlite").run(&embedded.pool).await.context("cannot apply migrations")
}
