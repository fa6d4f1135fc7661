//! The tail of the log: one reader per instance. It reads each new event once, in commit order, and
//! keeps the latest ones in memory, where every subscriber of the instance takes its batches from;
//! only a subscriber behind the window (a read model being filled, a process that took over a
//! lease) reads the log itself.
//!
//! The window holds every event after `start` up to `head`, of every type, in commit order: a
//! subscriber standing anywhere in between gets exactly what [`log::read_after`] would give it, and
//! may move to `head` when nothing of its types lies beyond its batch (the frontier).

use crate::store::log::{self, Batch, Checkpoint, StoredEvent};
use crate::store::Db;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::watch;

/// The events the window keeps at most (older ones are read from the log by whoever needs them).
pub(super) const WINDOW: usize = 16_384;

/// The latest events of the log, read once for every subscriber of this instance.
pub(super) struct Tail {
    window: Mutex<Window>,
    /// Where the tail stands (the last place read); subscribers wait on it.
    head: watch::Sender<Checkpoint>,
    /// At most this many events per read.
    batch_size: i64,
}

#[derive(Default)]
struct Window {
    /// Set once the tail has a place to read from.
    started: bool,
    /// Every event after `start` up to `head` is in `events`.
    start: Checkpoint,
    head: Checkpoint,
    events: VecDeque<StoredEvent>,
}

impl Tail {
    pub(super) fn new(batch_size: i64) -> Self {
        Self { window: Mutex::default(), head: watch::channel(Checkpoint::default()).0, batch_size }
    }

    /// Hears each move of the tail's head.
    pub(super) fn subscribe(&self) -> watch::Receiver<Checkpoint> {
        self.head.subscribe()
    }

    /// Starts the window at `at` (where the subscribers stand) unless it has started.
    pub(super) fn start_at(&self, at: Checkpoint) {
        if let Ok(mut window) = self.window.lock() {
            if !window.started {
                *window = Window { started: true, start: at, head: at, events: VecDeque::new() };
            }
        }
    }

    /// Forgets the window: the next read starts again from where the subscribers stand.
    pub(super) fn reset(&self) {
        if let Ok(mut window) = self.window.lock() {
            *window = Window::default();
        }
    }

    /// Whether the window has a place to read from.
    pub(super) fn started(&self) -> bool {
        self.window.lock().is_ok_and(|w| w.started)
    }

    /// Whether a subscriber at `at` takes its next batch from the window.
    pub(super) fn covers(&self, at: Checkpoint) -> bool {
        self.window.lock().is_ok_and(|w| w.started && w.start <= at && at <= w.head)
    }

    /// Reads what the log holds after the head, batch after batch, into the window; returns whether
    /// writers of the log were running at the last read (their events may be readable soon).
    pub(super) async fn read(&self, db: &Db) -> Result<bool, sqlx::Error> {
        loop {
            let Some(head) = self.window.lock().ok().filter(|w| w.started).map(|w| w.head) else { return Ok(false) };
            let mut pooled = db.acquire().await?;
            let batch = log::read_after(&mut pooled.conn(), head, None, self.batch_size).await?;
            drop(pooled);
            let to = batch.next_checkpoint(head, self.batch_size);
            let (n, held_back) = (batch.events.len(), batch.held_back);
            if let Ok(mut window) = self.window.lock() {
                // Another read (there is one reader task, but tests step by hand) got here first.
                if window.head != head {
                    continue;
                }
                window.events.extend(batch.events);
                window.head = to;
                while window.events.len() > WINDOW {
                    if let Some(oldest) = window.events.pop_front() {
                        window.start = oldest.checkpoint();
                    }
                }
            }
            self.head.send_if_modified(|h| std::mem::replace(h, to) != to);
            if (n as i64) < self.batch_size {
                return Ok(held_back);
            }
        }
    }

    /// The batch [`log::read_after`] would read after `from` (only of `types`, at most `limit`), when
    /// the window covers `from`; `None` when it does not (the caller reads the log).
    pub(super) fn after(&self, from: Checkpoint, types: Option<&[&str]>, limit: i64) -> Option<Batch> {
        let window = self.window.lock().ok()?;
        if !window.started || from < window.start || from > window.head {
            return None;
        }
        // The first event after `from`: events are in commit order.
        let first = window.events.partition_point(|e| e.checkpoint() <= from);
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let events: Vec<StoredEvent> = window
            .events
            .range(first..)
            .filter(|e| types.is_none_or(|t| t.contains(&e.aggregate_type.as_str())))
            .take(limit)
            .cloned()
            .collect();
        Some(Batch { events, frontier: Some(window.head), held_back: false })
    }
}
