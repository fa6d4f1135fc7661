//! `tacho audit verify` and `tacho projections rebuild`: commands an operator or auditor runs beside
//! a running tacho, with progress on stderr and the outcome on stdout.

use crate::audit::{self, Progress, VerifyReport};
use crate::config::Config;
use crate::projections::{Rebuilt, Subscriptions};
use crate::store::seal;
use anyhow::Context;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Prints progress at most five times a second: over itself on a terminal, as lines elsewhere.
struct Meter {
    last: Mutex<Option<Instant>>,
    terminal: bool,
}

impl Meter {
    fn new() -> Self {
        Self { last: Mutex::new(None), terminal: std::io::stderr().is_terminal() }
    }

    fn show(&self, line: impl FnOnce() -> String) {
        let Ok(mut last) = self.last.lock() else { return };
        let every = if self.terminal { Duration::from_millis(200) } else { Duration::from_secs(2) };
        if last.is_some_and(|at| at.elapsed() < every) {
            return;
        }
        *last = Some(Instant::now());
        match self.terminal {
            true => eprint!("\r\x1b[2K{}", line()),
            false => eprintln!("{}", line()),
        }
    }

    fn done(&self) {
        if self.terminal {
            eprint!("\r\x1b[2K");
        }
    }
}

fn bar(done: u64, total: u64) -> String {
    let filled = (done * 30).checked_div(total).unwrap_or(30) as usize;
    format!("[{}{}]", "#".repeat(filled), ".".repeat(30 - filled.min(30)))
}

/// Verifies the log; `Ok(false)` when anything does not match (the caller exits 1).
pub async fn audit_verify(
    config: &Config,
    aggregate_type: Option<&str>,
    id: Option<&str>,
    expect: Option<&str>,
) -> anyhow::Result<bool> {
    let db = crate::app::database_for_maintenance(config).await?;
    let meter = Meter::new();
    let started = Instant::now();
    let show = |p: Progress| {
        meter.show(|| {
            let rate = p.events as f64 / started.elapsed().as_secs_f64().max(1e-9);
            format!(
                "{} {}/{} streams, {} events ({:.0} events/s)",
                bar(p.streams, p.total),
                p.streams,
                p.total,
                p.events,
                rate
            )
        })
    };
    let report = audit::verify(&db, aggregate_type, id, &show).await.context("verification failed")?;
    meter.done();
    let seconds = started.elapsed().as_secs_f64();
    print!("{}", summary(&report, seconds));
    anyhow::ensure!(
        aggregate_type.is_none() || report.streams > 0,
        "no stream matches --aggregate-type {} {}",
        aggregate_type.unwrap_or_default(),
        id.map(|i| format!("--id {i}")).unwrap_or_default()
    );
    let mut clean = report.mismatches.is_empty();
    if let Some(expected) = expect {
        let (seal_no, hash) = expected.split_once(':').context("--expect takes SEAL_NO:HASH")?;
        let seal_no: i64 = seal_no.parse().context("--expect takes SEAL_NO:HASH")?;
        let stored = seal::chain_hash_of(&db, seal_no).await?;
        // Only a seal within the chain just recomputed (intact up to its head) counts.
        let verified = report.chain.as_ref().is_some_and(|head| seal_no <= head.seal_no);
        match stored {
            Some(stored) if stored == hash && verified => {
                println!("the chain passes through the recorded seal #{seal_no}: the log up to it was not rewritten");
            }
            _ => {
                println!("MISMATCH the chain does not pass through the recorded seal #{seal_no} {hash}: the log was rewritten");
                clean = false;
            }
        }
    }
    db.close().await;
    Ok(clean)
}

/// The report as an auditor reads it.
pub fn summary(report: &VerifyReport, seconds: f64) -> String {
    let mut out = format!(
        "streams {}, events {} ({} sealed, {} not sealed yet), read models lagging on {} streams, {:.1} s ({:.0} events/s)\n",
        report.streams,
        report.events,
        report.sealed,
        report.unsealed,
        report.lagging,
        seconds,
        report.events as f64 / seconds.max(1e-9)
    );
    if let Some(head) = report.chain.as_ref().filter(|_| report.mismatches.is_empty()) {
        out += &format!(
            "chain head: seal #{} at position {}: {}\n  (record `{}:{}` outside tacho; `audit verify --expect` checks the log still passes through it)\n",
            head.seal_no, head.position, head.chain_hash, head.seal_no, head.chain_hash
        );
    }
    if report.chain.is_none() && report.mismatches.is_empty() {
        out += "the seal chain was not checked (verify every stream to check it)\n";
    }
    out += &format!("mismatches: {}\n", report.mismatches.len());
    for m in &report.mismatches {
        let at = match (m.sequence, m.position) {
            (Some(s), Some(p)) => format!(" #{s} (position {p})"),
            (None, Some(p)) => format!(" (position {p})"),
            _ => String::new(),
        };
        out += &format!("MISMATCH {} {}{at}: {}\n", m.aggregate_type, m.aggregate_id, m.problem);
    }
    out
}

/// Rebuilds `name` (or every read model) into fresh tables and swaps them in.
pub async fn projections_rebuild(config: &Config, name: Option<&str>) -> anyhow::Result<()> {
    let db = crate::app::database_for_maintenance(config).await?;
    let subscriptions = Subscriptions::new(db.clone(), crate::app::projections());
    let names: Vec<&str> = match name {
        Some(name) => vec![name],
        None => crate::app::projections().iter().filter(|p| p.rebuildable()).map(|p| p.name()).collect(),
    };
    for name in names {
        let meter = Meter::new();
        let show = |r: Rebuilt| meter.show(|| format!("{name}: {} events ({:.0} events/s)", r.events, r.rate()));
        let rebuilt = subscriptions.rebuild_with(name, &show).await.with_context(|| format!("rebuilding {name}"))?;
        meter.done();
        println!(
            "{name}: rebuilt from {} events in {:.1} s ({:.0} events/s) and swapped in",
            rebuilt.events,
            rebuilt.seconds,
            rebuilt.rate()
        );
    }
    db.close().await;
    Ok(())
}
