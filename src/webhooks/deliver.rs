//! Delivery: one worker per active subscription, each with its own place in the log
//! (`webhook_cursors`), so a slow or dead endpoint delays only its own deliveries. The workers run
//! on the instance that holds the `webhooks` lease and check it before every request.
//!
//! A worker reads the log after its cursor (only the stream types its topics live in), keeps what
//! the subscription may receive *now* — its topics and VINs; a command's transitions only when its
//! principal requested the command; a vehicle's data only while that vehicle's owner grants the
//! principal the subscription's purpose, as the consents read model says once it has passed the
//! batch (so a revocation stops everything after it) — and posts it as one signed CloudEvents batch.
//! A 2xx moves the cursor past the batch; anything else (a status, a timeout, a redirect, a refused
//! address) is retried with exponential backoff and jitter, the same events again, and after
//! [`Settings::pause_after`] failures in a row the subscription is paused with the last error.

use super::envelope::{self, topic_of};
use super::signing::{signature_header, Secret};
use super::{address, Secrets};
use crate::domain::webhook::{Pause, Topic, Webhook, WebhookCommand, WebhookStatus};
use crate::metrics::Metrics;
use crate::projections::consents::ConsentsProjection;
use crate::projections::Subscriptions;
use crate::store::leases::{Lease, Leases};
use crate::store::log::{self, Checkpoint, StoredEvent};
use crate::store::{Conn, Db, Frameworks, Sql};
use chrono::Utc;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The lease (and log subscriber) name.
pub const NAME: &str = "webhooks";

/// How deliveries behave.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Failed attempts in a row after which a subscription is paused.
    pub pause_after: u32,
    /// First retry delay; doubled per failure up to `max_backoff`, with ±50 % jitter.
    pub first_backoff: Duration,
    /// Longest delay between attempts.
    pub max_backoff: Duration,
    /// Longest wait for a receiver's answer, connection included.
    pub timeout: Duration,
    /// Most events per request (halved after each failure in a row).
    pub batch: i64,
    /// Address ranges an operator allows although they are internal (`10.0.0.0/8` ...).
    pub allowed: Vec<address::Range>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            pause_after: 15,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(600),
            timeout: Duration::from_secs(10),
            batch: 500,
            allowed: Vec::new(),
        }
    }
}

/// Most events of any type a worker reads at once (it keeps those of its topics): it reads as many
/// as it delivers while most are its own, up to this many while few are.
const MAX_SCAN: i64 = 4000;

/// Most bytes of a receiver's answer read (the rest is dropped).
const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// Delivers every active subscription.
pub struct Deliverer {
    db: Db,
    frameworks: Arc<Frameworks>,
    subscriptions: Arc<Subscriptions>,
    leases: Leases,
    secrets: Secrets,
    client: reqwest::Client,
    settings: Settings,
    metrics: Arc<Metrics>,
}

impl Deliverer {
    /// A deliverer on `db`.
    pub fn new(
        db: Db,
        frameworks: Arc<Frameworks>,
        subscriptions: Arc<Subscriptions>,
        leases: Leases,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the environment would resolve names itself, past the guarded resolver.
            .no_proxy()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .dns_resolver(Arc::new(Guarded { allowed: settings.allowed.clone() }))
            .user_agent(concat!("tacho-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a plain HTTP client builds");
        let secrets = Secrets::new(&db);
        Arc::new(Self { db, frameworks, subscriptions, leases, secrets, client, settings, metrics })
    }

    /// Takes the lease when free and keeps one worker per active subscription while it holds it.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut workers: HashMap<Uuid, JoinHandle<()>> = HashMap::new();
        let mut changes = self.subscriptions.progress(crate::projections::webhooks::WebhooksProjection::NAME);
        while !shutdown.is_cancelled() {
            let lease = match self.leases.try_take(NAME).await {
                Ok(Some(lease)) => lease,
                Ok(None) | Err(_) => {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                    }
                }
            };
            while lease.check().is_ok() && !shutdown.is_cancelled() {
                workers.retain(|_, worker| !worker.is_finished());
                match active(&self.db).await {
                    Ok(ids) => {
                        for id in ids {
                            workers.entry(id).or_insert_with(|| {
                                let (this, lease, stop) = (Arc::clone(&self), lease.clone(), shutdown.child_token());
                                tokio::spawn(async move { this.work(id, lease, stop).await })
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot list webhook subscriptions"),
                }
                // Woken when the subscriptions read model moves; every 30 s anyway.
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = moved(&mut changes) => {}
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
            }
            for (_, worker) in workers.drain() {
                worker.abort();
            }
            self.leases.release(&lease).await;
        }
    }

    /// Delivers subscription `id` until it is no longer active, the lease is lost or tacho stops.
    async fn work(&self, id: Uuid, lease: Lease, stop: CancellationToken) {
        let mut wake = self.subscriptions.progress(crate::projections::seals::SealProjection::NAME);
        // The subscription, loaded again when the subscriptions read model has moved (a pause, a
        // rotation, a replay), not for every batch.
        let mut changes = self.subscriptions.progress(crate::projections::webhooks::WebhooksProjection::NAME);
        let mut webhook: Option<Webhook> = None;
        let mut failures = 0u32;
        let mut scan = self.settings.batch;
        loop {
            if stop.is_cancelled() || lease.check().is_err() {
                return;
            }
            if let Some(changes) = changes.as_mut() {
                if changes.has_changed().unwrap_or(false) {
                    changes.borrow_and_update();
                    webhook = None;
                }
            }
            let current = match webhook.take() {
                Some(current) => current,
                None => match self.frameworks.stores.load::<Webhook>(&id.to_string()).await {
                    Ok(loaded) => loaded,
                    Err(e) => {
                        tracing::warn!(subscription = %id, error = %e, "webhook worker cannot load its subscription");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                        }
                    }
                },
            };
            // After failures, smaller batches: a receiver that refuses a large body (413) or one
            // event still takes the others, down to one event at a time.
            let size = (self.settings.batch >> failures.min(16)).max(1);
            let step = self.step(id, &current, size, &mut scan, &lease).await;
            webhook = Some(current);
            let delay = match step {
                Ok(Step::Delivered) => {
                    failures = 0;
                    continue;
                }
                Ok(Step::CaughtUp) => None,
                Ok(Step::Stopped) => return,
                Err(Failure::Attempt { error, failures: run }) => {
                    // The run of failures is kept with the cursor (a restart does not reset it),
                    // counted with the attempt's record.
                    failures = run;
                    tracing::warn!(subscription = %id, failures, %error, "webhook delivery failed");
                    if failures >= self.settings.pause_after {
                        let pause = Pause::Failing { failures, last_error: error };
                        let command = WebhookCommand::Pause { pause, at: Utc::now() };
                        let meta = HashMap::from([("actor".to_owned(), "tacho".to_owned())]);
                        let paused =
                            self.frameworks.execute(&self.frameworks.webhooks, &id.to_string(), command, &meta).await;
                        if paused.is_ok() {
                            return;
                        }
                    }
                    Some(self.backoff(failures))
                }
                Err(Failure::Tacho(error)) => {
                    tracing::warn!(subscription = %id, %error, "webhook worker cannot read its subscription or the log");
                    Some(Duration::from_secs(2))
                }
            };
            match delay {
                Some(delay) => tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                },
                None => {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = moved(&mut wake) => {}
                        _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                    }
                }
            }
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        let base = self.settings.first_backoff.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
        let capped = base.min(self.settings.max_backoff);
        capped.mul_f64(rand::random::<f64>() + 0.5)
    }

    /// One batch of at most `size` events out of `scan` read: read, filter, post, move the cursor;
    /// `scan` grows while few events are the subscription's.
    async fn step(
        &self,
        id: Uuid,
        webhook: &Webhook,
        size: i64,
        scan: &mut i64,
        lease: &Lease,
    ) -> Result<Step, Failure> {
        if webhook.status != WebhookStatus::Active {
            return Ok(Step::Stopped);
        }
        let types = envelope::stream_types(webhook.topics.iter().copied());
        let mut pooled = self.db.acquire().await.map_err(Failure::tacho)?;
        let from = cursor(&mut pooled.conn(), id).await.map_err(Failure::tacho)?;
        let cursor = from.at;
        // Every type read, the subscription's kept (a read filtered by type in the database walks
        // an index of all the events of those types and sorts them: 30 ms a batch, measured).
        let read = *scan;
        let picked = log::read_after_picking(&mut pooled.conn(), cursor, &types, read).await.map_err(Failure::tacho)?;
        drop(pooled);
        *scan = match picked.events.len() as i64 {
            kept if kept >= size || picked.read < read as u64 => size,
            kept if kept < size / 4 => (read * 4).min(MAX_SCAN),
            _ => read,
        };
        let (mut events, mut next) = (picked.events, picked.next);
        if events.len() > size as usize {
            events.truncate(size as usize);
            next = events.last().map(StoredEvent::checkpoint).unwrap_or(next);
        }
        if events.is_empty() {
            if next > cursor {
                save(&self.db, id, from, next).await.map_err(Failure::tacho)?;
            }
            // A full read of other types: more may follow at once.
            return Ok(if picked.read as i64 >= read { Step::Delivered } else { Step::CaughtUp });
        }
        let envelopes = self.deliverable(webhook, &events).await?;
        if !envelopes.is_empty() {
            lease.check().map_err(|e| Failure::Tacho(e.to_string()))?;
            self.post(id, from.generation, webhook, &envelopes, &events).await?;
        }
        // Another instance may have taken over during a long request: it owns the cursor now.
        lease.check().map_err(|e| Failure::Tacho(e.to_string()))?;
        save(&self.db, id, from, next).await.map_err(Failure::tacho)?;
        Ok(Step::Delivered)
    }

    /// The envelopes of `events` the subscription may receive now.
    async fn deliverable(&self, webhook: &Webhook, events: &[StoredEvent]) -> Result<Vec<Value>, Failure> {
        let wanted: Vec<(&StoredEvent, Topic)> = events
            .iter()
            .filter(|e| e.unreadable.is_none())
            .filter_map(|e| topic_of(e).filter(|t| webhook.topics.contains(t)).map(|t| (e, t)))
            .collect();
        // Commands: their vehicle and requester, from the commands read model once it has passed
        // the batch (a command it has not applied yet would be passed over for good).
        let last = events.last().map(StoredEvent::checkpoint).unwrap_or_default();
        let command_ids: Vec<String> =
            wanted.iter().filter(|(_, t)| *t == Topic::Command).map(|(e, _)| e.aggregate_id.clone()).collect();
        if !command_ids.is_empty() {
            self.settled(crate::projections::commands::CommandsProjection::NAME, last).await?;
        }
        let commands = requesters(&self.db, &command_ids).await.map_err(Failure::tacho)?;
        let unresolved = command_ids.iter().filter(|id| !commands.contains_key(*id)).count();
        if unresolved > 0 {
            // Only a command whose stream does not decode has no row once the read model passed it.
            tracing::warn!(unresolved, "webhook deliverer passes over command events without a command row");
            self.metrics.add("tacho_webhook_commands_unresolved_total", &[], unresolved as u64);
        }
        let vin_of = |event: &StoredEvent, topic: Topic| -> Option<String> {
            match topic {
                Topic::Command => commands.get(&event.aggregate_id).map(|(vin, _)| vin.clone()),
                _ => Some(event.aggregate_id.clone()),
            }
        };
        let in_filter = |vin: &str| webhook.vins.is_empty() || webhook.vins.iter().any(|v| v.as_str() == vin);
        // Vehicle data: the owner's grant of the purpose to this principal in force now (once the
        // consents read model has passed the batch), and only what was recorded since it began.
        let vins: HashSet<String> = wanted
            .iter()
            .filter(|(_, t)| t.needs_consent())
            .map(|(e, _)| e.aggregate_id.clone())
            .filter(|vin| in_filter(vin))
            .collect();
        let consented = match (&webhook.purpose, vins.is_empty()) {
            (Some(purpose), false) => {
                self.settled(ConsentsProjection::NAME, last).await?;
                let vins: Vec<String> = vins.into_iter().collect();
                let by_purpose = grants(&self.db, &vins, &webhook.principal, purpose.as_str()).await;
                let location =
                    grants(&self.db, &vins, &webhook.principal, crate::domain::consent::Purpose::LOCATION).await;
                (by_purpose.map_err(Failure::tacho)?, location.map_err(Failure::tacho)?)
            }
            _ => (HashMap::new(), HashMap::new()),
        };
        let mut out = Vec::new();
        for (event, topic) in wanted {
            let Some(vin) = vin_of(event, topic) else { continue };
            if !in_filter(&vin) {
                continue;
            }
            if topic == Topic::Command {
                let requested_by_principal =
                    commands.get(&event.aggregate_id).is_some_and(|(_, r)| *r == webhook.principal);
                if requested_by_principal {
                    out.push(envelope::envelope(event, &event.aggregate_id, None, true));
                }
                continue;
            }
            if let Some(grant) = consented.0.get(&vin).filter(|g| event.checkpoint() > g.since) {
                let location = consented.1.get(&vin).is_some_and(|g| event.checkpoint() > g.since);
                out.push(envelope::envelope(event, &vin, Some(grant.version), location));
            }
        }
        Ok(out)
    }

    /// Waits until read model `name` has passed `at`.
    async fn settled(&self, name: &str, at: Checkpoint) -> Result<(), Failure> {
        if self.subscriptions.wait_for(name, at, Duration::from_secs(5)).await {
            Ok(())
        } else {
            Err(Failure::Tacho(format!("the {name} read model lags behind the log")))
        }
    }

    async fn post(
        &self,
        id: Uuid,
        generation: i64,
        webhook: &Webhook,
        envelopes: &[Value],
        events: &[StoredEvent],
    ) -> Result<(), Failure> {
        let endpoint = webhook.endpoint.as_ref().ok_or_else(|| Failure::Tacho("no endpoint".into()))?;
        let url = url::Url::parse(endpoint.as_str()).map_err(|e| Failure::Tacho(e.to_string()))?;
        let mut fingerprints = vec![webhook.secret.as_str()];
        if let Some((previous, until)) = &webhook.previous_secret {
            if Utc::now() < *until {
                fingerprints.push(previous.as_str());
            }
        }
        let secrets: Vec<Secret> = self.secrets.get(id, &fingerprints).await.map_err(Failure::tacho)?;
        let body = serde_json::to_vec(envelopes).map_err(|e| Failure::Tacho(e.to_string()))?;
        let (first, last) = (&events[0], &events[events.len() - 1]);
        // A replay's batch is a new message: receivers deduplicate on `webhook-id`.
        let message_id = format!("{id}:{generation}:{}:{}", first.position, last.position);
        let timestamp = Utc::now().timestamp();
        let started = Instant::now();
        let refused = address::literal(&url).and_then(|ip| address::refused_unless(ip, &self.settings.allowed));
        let sent = match refused {
            Some(why) => Err(format!("tacho does not deliver to {why}")),
            // Counted as a failed attempt, so that it shows and the subscription is paused: a new
            // secret (rotate-secret) lets it go on.
            None if secrets.is_empty() => Err("the subscription's signing secret is missing: rotate it".to_owned()),
            None => self
                .client
                .post(url)
                .header("content-type", "application/cloudevents-batch+json")
                .header("webhook-id", &message_id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature_header(&secrets, &message_id, timestamp, &body))
                .body(body)
                .send()
                .await
                .map_err(|e| error_chain(&e)),
        };
        let outcome = match sent {
            Ok(mut response) => {
                let status = response.status();
                // Read a little of the answer (a receiver cannot make tacho hold much), then drop it.
                let mut read = 0;
                while read < MAX_ANSWER_BYTES {
                    match response.chunk().await {
                        Ok(Some(chunk)) => read += chunk.len(),
                        _ => break,
                    }
                }
                if status.is_success() {
                    Ok(Some(status.as_u16()))
                } else if status.is_redirection() {
                    Err((Some(status.as_u16()), format!("redirect ({status}) not followed")))
                } else {
                    Err((Some(status.as_u16()), format!("answered {status}")))
                }
            }
            Err(e) => Err((None, e)),
        };
        let latency = started.elapsed();
        let (status, error) = match &outcome {
            Ok(status) => (*status, None),
            Err((status, error)) => (*status, Some(error.clone())),
        };
        let span = (first.position, last.position);
        let failures = record(&self.db, id, envelopes.len(), span, status, latency, error.as_deref())
            .await
            .map_err(Failure::tacho)?;
        match error {
            None => {
                self.metrics.inc("tacho_webhook_attempts_total", &[("outcome", "delivered")]);
                self.metrics.add("tacho_webhook_events_delivered_total", &[], envelopes.len() as u64);
                Ok(())
            }
            Some(error) => {
                self.metrics.inc("tacho_webhook_attempts_total", &[("outcome", "failed")]);
                Err(Failure::Attempt { error, failures })
            }
        }
    }
}

/// Returns when the subscriber `progress` watches moves (never without one).
async fn moved(progress: &mut Option<tokio::sync::watch::Receiver<Checkpoint>>) {
    match progress.as_mut() {
        Some(progress) => {
            let _ = progress.changed().await;
        }
        None => std::future::pending().await,
    }
}

enum Step {
    Delivered,
    CaughtUp,
    Stopped,
}

enum Failure {
    /// The receiver did not take the batch: why, and the failures in a row with this one.
    Attempt { error: String, failures: u32 },
    /// tacho could not do its part (database, lease).
    Tacho(String),
}

impl Failure {
    fn tacho(error: impl std::fmt::Display) -> Self {
        Self::Tacho(error.to_string())
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Resolves endpoint names and refuses internal addresses: a name that resolves to one is not
/// connected to at all (the check and the connection use the same answer, so a rebinding DNS
/// server cannot slip an internal address in between).
struct Guarded {
    allowed: Vec<address::Range>,
}

impl reqwest::dns::Resolve for Guarded {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allowed = self.allowed.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some((ip, why)) =
                addrs.iter().find_map(|a| address::refused_unless(a.ip(), &allowed).map(|why| (a.ip(), why)))
            {
                // The subscriber sees the kind of address, not the address: tacho's internal DNS
                // answers are not its business.
                tracing::warn!(%host, %ip, "a webhook endpoint resolves to an address tacho does not deliver to");
                return Err(format!("{host} resolves to {why}: tacho does not deliver there").into());
            }
            if addrs.is_empty() {
                return Err(format!("{host} does not resolve").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Active subscriptions.
async fn active(db: &Db) -> Result<Vec<Uuid>, sqlx::Error> {
    let rows: Vec<(Uuid,)> =
        Sql::new("SELECT webhook_id FROM rm_webhooks WHERE status = 'active'").fetch_all(db).await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// A subscription's place in the log, and the generation of that place: the sequence of the
/// replay that last moved it back (0 before any).
#[derive(Debug, Clone, Copy)]
struct Cursor {
    at: Checkpoint,
    generation: i64,
}

/// Where subscription `id` stands: its cursor, else the log's place of its creation (it receives
/// what was appended after it subscribed).
async fn cursor(conn: &mut Conn<'_>, id: Uuid) -> Result<Cursor, sqlx::Error> {
    let sql = "SELECT tx_id, position, generation FROM webhook_cursors WHERE webhook_id = $1";
    let row: Option<(i64, i64, i64)> = Sql::new(sql).bind(id).fetch_optional(&mut *conn).await?;
    if let Some((tx_id, position, generation)) = row {
        return Ok(Cursor { at: Checkpoint { tx_id, position }, generation });
    }
    let stream = log::read_stream(conn, crate::domain::streams::WEBHOOK, &id.to_string()).await?;
    Ok(Cursor { at: stream.first().map(StoredEvent::checkpoint).unwrap_or_default(), generation: 0 })
}

/// Moves subscription `id` to `at` and ends its run of failures, unless a replay moved it since
/// `from` was read.
async fn save(db: &Db, id: Uuid, from: Cursor, at: Checkpoint) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO webhook_cursors (webhook_id, tx_id, position, generation, updated_at, failures) \
         VALUES ($1, $2, $3, $4, $5, 0) ON CONFLICT (webhook_id) DO UPDATE SET tx_id = $2, position = $3, \
         updated_at = $5, failures = 0 WHERE webhook_cursors.generation = $4";
    Sql::new(sql).bind(id).bind(at.tx_id).bind(at.position).bind(from.generation).bind(Utc::now()).execute(db).await?;
    Ok(())
}

/// A subscription resumed `at` starts a new run of failures (in the read model's transaction);
/// a resumption older than the cursor's last change (a rebuild applying it again) changes nothing.
pub async fn resumed(conn: &mut Conn<'_>, id: Uuid, at: chrono::DateTime<Utc>) -> Result<(), sqlx::Error> {
    let sql = "UPDATE webhook_cursors SET failures = 0, updated_at = $2 WHERE webhook_id = $1 AND updated_at <= $2";
    Sql::new(sql).bind(id).bind(at).execute(conn).await?;
    Ok(())
}

/// A deleted subscription's place and attempts go (in the read model's transaction).
pub async fn deleted(conn: &mut Conn<'_>, id: Uuid) -> Result<(), sqlx::Error> {
    for table in ["webhook_cursors", "webhook_deliveries", "webhook_secrets"] {
        Sql::new(&format!("DELETE FROM {table} WHERE webhook_id = $1")).bind(id).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Moves subscription `id` back so that it delivers again from log position `from` on, for the
/// replay recorded at sequence `generation` of its stream (in the read model's transaction, so
/// the replay and its event commit together; a replay already applied, as in a rebuild, moves
/// nothing). Never forward: a replay does not skip what was not delivered yet. On PostgreSQL
/// commit order is not position order: it goes back to before the oldest transaction among the
/// first 10,000 events from `from` (a writer takes its transaction id just before it appends, so
/// positions and transaction ids part by far fewer events than that; every writer older than the
/// replay's own event has committed when the read model applies it), so a little more than asked
/// may come again (receivers deduplicate on the id).
pub async fn rewind(conn: &mut Conn<'_>, id: Uuid, from: i64, generation: i64) -> Result<(), sqlx::Error> {
    let current = cursor(conn, id).await?;
    if current.generation >= generation {
        return Ok(());
    }
    let target = match conn {
        Conn::Postgres(pg) => {
            let sql = "SELECT min(tx) FROM (SELECT tx_id::text::bigint AS tx FROM events WHERE global_position >= $1 \
                 ORDER BY global_position LIMIT 10000) AS first";
            let oldest: Option<i64> = sqlx::query_scalar(sql).bind(from).fetch_one(&mut **pg).await?;
            match oldest {
                Some(tx) => Checkpoint { tx_id: tx - 1, position: i64::MAX },
                None => current.at,
            }
        }
        Conn::Sqlite(_) => Checkpoint { tx_id: 0, position: from.saturating_sub(1) },
    };
    if target >= current.at {
        // Nothing to deliver again (a position past the cursor): the batch in flight stays valid.
        return Ok(());
    }
    let sql = "INSERT INTO webhook_cursors (webhook_id, tx_id, position, generation, updated_at, failures) \
         VALUES ($1, $2, $3, $4, $5, 0) ON CONFLICT (webhook_id) DO UPDATE SET tx_id = $2, position = $3, \
         generation = $4, updated_at = $5";
    Sql::new(sql)
        .bind(id)
        .bind(target.tx_id)
        .bind(target.position)
        .bind(generation)
        .bind(Utc::now())
        .execute(conn)
        .await?;
    Ok(())
}

/// Vehicle and requester of each command id (one statement on PostgreSQL).
async fn requesters(db: &Db, ids: &[String]) -> Result<HashMap<String, (String, String)>, sqlx::Error> {
    let uuids: Vec<Uuid> =
        ids.iter().collect::<HashSet<_>>().into_iter().filter_map(|id| Uuid::parse_str(id).ok()).collect();
    let rows: Vec<(Uuid, String, String)> = match db {
        _ if uuids.is_empty() => Vec::new(),
        Db::Postgres(pool) => {
            let sql = "SELECT command_id, vin, requester FROM rm_commands WHERE command_id = ANY($1)";
            sqlx::query_as(sql).bind(&uuids).fetch_all(pool).await?
        }
        Db::Sqlite(_) => {
            let mut rows = Vec::with_capacity(uuids.len());
            for id in uuids {
                let sql = "SELECT command_id, vin, requester FROM rm_commands WHERE command_id = $1";
                rows.extend(Sql::new(sql).bind(id).fetch_optional(db).await?);
            }
            rows
        }
    };
    Ok(rows.into_iter().map(|(id, vin, requester)| (id.to_string(), (vin, requester))).collect())
}

/// A grant in force: its version, and where in the log it began.
#[derive(Debug, Clone, Copy)]
struct Grant {
    version: u32,
    since: Checkpoint,
}

/// `subject`'s grant of `purpose` in force now, per VIN of `vins` (one statement).
async fn grants(db: &Db, vins: &[String], subject: &str, purpose: &str) -> Result<HashMap<String, Grant>, sqlx::Error> {
    let sql = format!(
        "SELECT vin, version, granted_tx, granted_position FROM rm_consents WHERE {} AND subject = $2 \
         AND purpose = $3 AND status = 'granted' AND (expires_at IS NULL OR expires_at > $4)",
        db.dialect().in_json_list("vin", "$1")
    );
    let rows: Vec<(String, i64, i64, i64)> =
        Sql::new(&sql).bind(serde_json::json!(vins)).bind(subject).bind(purpose).bind(Utc::now()).fetch_all(db).await?;
    Ok(rows
        .into_iter()
        .map(|(vin, version, tx_id, position)| {
            let version = u32::try_from(version).unwrap_or(u32::MAX);
            (vin, Grant { version, since: Checkpoint { tx_id, position } })
        })
        .collect())
}

/// Records an attempt of subscription `id` (keeping its latest 100) and, for a failed one, counts
/// it in the subscription's run of failures, in one transaction; returns that run.
async fn record(
    db: &Db,
    id: Uuid,
    events: usize,
    (first, last): (i64, i64),
    status: Option<u16>,
    latency: Duration,
    error: Option<&str>,
) -> Result<u32, sqlx::Error> {
    let mut tx = db.begin().await?;
    let mut conn = tx.conn();
    let sql = "INSERT INTO webhook_deliveries (webhook_id, attempted_at, ok, response_status, latency_ms, events, \
         first_position, last_position, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
    Sql::new(sql)
        .bind(id)
        .bind(Utc::now())
        .bind(error.is_none())
        .bind(status.map(i64::from))
        .bind(i64::try_from(latency.as_millis()).unwrap_or(i64::MAX))
        .bind(events as i64)
        .bind(first)
        .bind(last)
        .bind(error.map(|e| e.chars().take(500).collect::<String>()))
        .execute(&mut conn)
        .await?;
    let prune = "DELETE FROM webhook_deliveries WHERE webhook_id = $1 AND attempt_no <= \
         (SELECT max(attempt_no) - 100 FROM webhook_deliveries WHERE webhook_id = $1)";
    Sql::new(prune).bind(id).execute(&mut conn).await?;
    let failures = match error {
        None => 0,
        Some(_) => {
            let at = cursor(&mut conn, id).await?;
            let sql = "INSERT INTO webhook_cursors (webhook_id, tx_id, position, generation, updated_at, failures) \
                 VALUES ($1, $2, $3, $4, $5, 1) ON CONFLICT (webhook_id) DO UPDATE \
                 SET failures = webhook_cursors.failures + 1, updated_at = $5 RETURNING failures";
            let (failures,): (i64,) = Sql::new(sql)
                .bind(id)
                .bind(at.at.tx_id)
                .bind(at.at.position)
                .bind(at.generation)
                .bind(Utc::now())
                .fetch_one(&mut conn)
                .await?;
            u32::try_from(failures).unwrap_or(u32::MAX)
        }
    };
    tx.commit().await?;
    Ok(failures)
}
