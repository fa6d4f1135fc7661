//! What a phase costs: PostgreSQL transactions and rows of tacho's database (`pg_stat_database`), and
//! CPU seconds of this process and of the database server's processes (`/proc`, same machine).
//!
//! PostgreSQL 15 backends report their counters once a second while busy and within 10 s once idle,
//! so a reading is taken only after [`SETTLE`] without load, and the idle rate measured first is
//! taken off what a phase's readings include beyond the phase itself.

use crate::store::Db;
use std::time::{Duration, Instant};

/// How long counters take to reach `pg_stat_database` once the load stops.
pub const SETTLE: Duration = Duration::from_secs(11);

/// Counters at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    at: Instant,
    /// Whether the database counts transactions and rows (PostgreSQL; SQLite does not).
    counted: bool,
    transactions: i64,
    rows_read: i64,
    rows_written: i64,
    cpu_self: f64,
    cpu_db: f64,
}

/// What happened between two readings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cost {
    /// Whether transactions and rows were counted (PostgreSQL).
    pub counted: bool,
    /// Seconds between the readings.
    pub seconds: f64,
    /// Transactions committed or rolled back in tacho's database.
    pub transactions: f64,
    /// Rows returned by scans and fetched by index (`tup_returned + tup_fetched`).
    pub rows_read: f64,
    /// Rows inserted, updated or deleted.
    pub rows_written: f64,
    /// CPU seconds of this process.
    pub cpu_self: f64,
    /// CPU seconds of every PostgreSQL process of the machine (exited backends included).
    pub cpu_db: f64,
}

impl Cost {
    /// This cost less `idle` (a per-second cost) over `seconds`.
    pub fn less_idle(self, idle: &Cost, seconds: f64) -> Cost {
        let per_s = |v: f64| if idle.seconds > 0.0 { v / idle.seconds * seconds } else { 0.0 };
        Cost {
            counted: self.counted,
            seconds: self.seconds,
            transactions: (self.transactions - per_s(idle.transactions)).max(0.0),
            rows_read: (self.rows_read - per_s(idle.rows_read)).max(0.0),
            rows_written: (self.rows_written - per_s(idle.rows_written)).max(0.0),
            cpu_self: (self.cpu_self - per_s(idle.cpu_self)).max(0.0),
            cpu_db: (self.cpu_db - per_s(idle.cpu_db)).max(0.0),
        }
    }

    /// This cost divided by `n` (per command, per report).
    pub fn per(self, n: f64) -> Cost {
        let n = n.max(1.0);
        Cost {
            counted: self.counted,
            seconds: self.seconds,
            transactions: self.transactions / n,
            rows_read: self.rows_read / n,
            rows_written: self.rows_written / n,
            cpu_self: self.cpu_self / n,
            cpu_db: self.cpu_db / n,
        }
    }
}

impl Reading {
    /// What happened since `before`.
    pub fn since(&self, before: &Reading) -> Cost {
        Cost {
            counted: self.counted && before.counted,
            seconds: (self.at - before.at).as_secs_f64(),
            transactions: (self.transactions - before.transactions) as f64,
            rows_read: (self.rows_read - before.rows_read) as f64,
            rows_written: (self.rows_written - before.rows_written) as f64,
            cpu_self: self.cpu_self - before.cpu_self,
            cpu_db: self.cpu_db - before.cpu_db,
        }
    }
}

/// Reads the counters of `db` (PostgreSQL: `pg_stat_database` of its database; SQLite counts
/// nothing) and of the processes.
pub async fn read(db: &Db) -> anyhow::Result<Reading> {
    let (counted, transactions, rows_read, rows_written) = match db {
        Db::Postgres(pool) => {
            let mut conn = pool.acquire().await?;
            sqlx::query("SELECT pg_stat_clear_snapshot()").execute(&mut *conn).await?;
            let (transactions, rows_read, rows_written): (i64, i64, i64) = sqlx::query_as(
                "SELECT (xact_commit + xact_rollback)::bigint, (tup_returned + tup_fetched)::bigint, \
                   (tup_inserted + tup_updated + tup_deleted)::bigint \
                 FROM pg_stat_database WHERE datname = current_database()",
            )
            .fetch_one(&mut *conn)
            .await?;
            (true, transactions, rows_read, rows_written)
        }
        Db::Sqlite(_) => (false, 0, 0, 0),
    };
    Ok(Reading {
        at: Instant::now(),
        counted,
        transactions,
        rows_read,
        rows_written,
        cpu_self: cpu_seconds("self").unwrap_or(0.0),
        cpu_db: if counted { postgres_cpu_seconds() } else { 0.0 },
    })
}

/// Clock ticks per second of `/proc/*/stat` (USER_HZ: 100 on every Linux platform tacho runs on).
const TICKS: f64 = 100.0;

/// CPU seconds of process `pid` (`self` for this one), its exited children included.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime, stime, cutime, cstime: fields 14 to 17 of stat(5), 12 to 15 after the name.
    let ticks: f64 = fields.get(11..15)?.iter().filter_map(|f| f.parse::<f64>().ok()).sum();
    Some(ticks / TICKS)
}

/// CPU seconds of every process named `postgres` (server, backends, and exited backends through
/// the server's children's times).
fn postgres_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0.0 };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().into_string().ok()?;
            pid.parse::<u32>().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (comm.trim() == "postgres").then(|| cpu_seconds(&pid)).flatten()
        })
        .sum()
}

/// Resident memory of process `pid` in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
