//! Filling read models from the whole log: `projections rebuild`, and read models new in a version
//! at start (both into fresh tables, then swapped in; see [`crate::projections::rebuild`]).

use super::{unknown, Kind, Subscriber, Subscriptions};
use crate::projections::rebuild::{self, Rebuilt};
use crate::projections::{Projection, ProjectionError};
use crate::store::{checkpoints, log, queries};

impl Subscriptions {
    /// Rebuilds read model `name` from position 0 into fresh tables and swaps them in (see
    /// [`super::rebuild`]); the API answers from the old tables meanwhile.
    pub async fn rebuild(&self, name: &str) -> Result<Rebuilt, ProjectionError> {
        self.rebuild_with(name, &|_| {}).await
    }

    /// [`Self::rebuild`], telling `progress` after each batch.
    pub async fn rebuild_with(
        &self,
        name: &str,
        progress: &(dyn Fn(Rebuilt) + Send + Sync),
    ) -> Result<Rebuilt, ProjectionError> {
        let subscriber = self.subscribers.get(name).ok_or_else(|| unknown(name))?;
        let Kind::Projection(projection) = &subscriber.kind else {
            return Err(ProjectionError::NotReadModel(name.to_owned()));
        };
        if !projection.rebuildable() {
            return Err(ProjectionError::NotRebuildable(name.to_owned()));
        }
        self.fill(subscriber, projection.as_ref(), rebuild::When::Always, progress).await
    }

    async fn fill(
        &self,
        subscriber: &Subscriber,
        projection: &dyn Projection,
        when: rebuild::When,
        progress: &(dyn Fn(Rebuilt) + Send + Sync),
    ) -> Result<Rebuilt, ProjectionError> {
        let rebuilt = rebuild::rebuild(&self.db, projection, &subscriber.turn, when, progress).await?;
        let at = checkpoints::load(&mut self.db.acquire().await?.conn(), projection.name()).await?;
        subscriber.progress.send_if_modified(|p| std::mem::replace(p, at) != at);
        Ok(rebuilt)
    }

    /// Finds the read models new in this version: no checkpoint yet over a log that has events.
    /// Call before the API takes writes; [`Self::start`] fills them (fresh tables, then a swap)
    /// before they follow the log.
    pub async fn find_new_read_models(&self) -> Result<Vec<&'static str>, ProjectionError> {
        let mut pooled = self.db.acquire().await?;
        let mut conn = pooled.conn();
        let any = log::has_events(&mut conn).await?;
        let mut new = Vec::new();
        for name in self.names() {
            let is_projection = self.subscribers.get(name).is_some_and(|s| matches!(s.kind, Kind::Projection(_)));
            let known = checkpoints::exists(&mut conn, name).await?;
            if any && is_projection && !known {
                if let Some(Kind::Projection(p)) = self.subscribers.get(name).map(|s| &s.kind) {
                    // A reference (the seals) with rows but no checkpoint was tampered with or
                    // damaged: it is never refilled from the log, which would bless the log as is.
                    let filled = queries::table_has_rows(&mut conn, p.tables()[0]).await?;
                    if !p.rebuildable() && filled {
                        tracing::error!(
                            subscriber = name,
                            "has rows but no checkpoint: not refilled; run tacho audit verify"
                        );
                        continue;
                    }
                }
                new.push(name);
            }
        }
        if let Ok(mut unfilled) = self.unfilled.lock() {
            unfilled.extend(new.iter().copied());
        }
        Ok(new)
    }

    /// Fills `name` when [`Self::find_new_read_models`] found it new.
    pub(super) async fn fill_if_new(&self, name: &str) -> Result<(), ProjectionError> {
        let new = self.unfilled.lock().is_ok_and(|u| u.contains(name));
        let Some(subscriber) = self.subscribers.get(name).filter(|_| new) else { return Ok(()) };
        let Kind::Projection(projection) = &subscriber.kind else { return Ok(()) };
        tracing::info!(subscriber = name, "new read model: filling it from the log");
        let rebuilt = self.fill(subscriber, projection.as_ref(), rebuild::When::New, &|_| {}).await?;
        tracing::info!(subscriber = name, events = rebuilt.events, per_s = rebuilt.rate() as u64, "read model filled");
        if let Ok(mut unfilled) = self.unfilled.lock() {
            unfilled.remove(name);
        }
        Ok(())
    }
}
