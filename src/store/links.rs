//! What tacho knows of each vehicle's connection (`vehicle_links`, see [`crate::domain::connection`]):
//! read and written inside the transaction that appends the facts it decides, so the connection
//! changes in the log are decided from what is committed, never from a read model that may lag.

use super::facts::Observed;
use super::{Conn, Sql};
use crate::domain::connection::{observe, Heard, Link};
use crate::domain::observation::VehicleFact;
use chrono::{DateTime, Utc};
use serde_json::json;
use std::borrow::Cow;
use std::collections::HashMap;

/// `facts` with their connection messages decided: stale ones and repeats dropped (returned, by
/// reason), and a `ConnectionChanged` put before the first message of a vehicle tacho knew as
/// offline. `heard` are other messages of vehicles (answers) received at the given times.
pub(super) async fn admit<'f>(
    conn: &mut Conn<'_>,
    facts: &'f [Observed],
    heard: &[(String, DateTime<Utc>)],
) -> Result<(Vec<Cow<'f, Observed>>, Vec<&'static str>), sqlx::Error> {
    let mut vins: Vec<&str> =
        facts.iter().map(|o| o.vin.as_str()).chain(heard.iter().map(|(v, _)| v.as_str())).collect();
    vins.sort_unstable();
    vins.dedup();
    if vins.is_empty() {
        return Ok((vec![], vec![]));
    }
    let mut links = load(conn, &vins).await?;
    let mut changed: HashMap<String, Link> = HashMap::new();
    let (mut admitted, mut ignored) = (Vec::with_capacity(facts.len()), Vec::new());
    let mut step = |vin: &str, heard: Heard, at: DateTime<Utc>, admitted: &mut Vec<Cow<'f, Observed>>| {
        let step = observe(links.get(vin), heard, at);
        ignored.extend(step.ignored);
        if let Some(online) = step.change {
            let vehicle_ts = match heard {
                Heard::Connection { ts, .. } => ts,
                Heard::Message => None,
            };
            let fact = VehicleFact::ConnectionChanged { online, vehicle_ts, received_at: at };
            admitted.push(Cow::Owned(Observed { vin: vin.to_owned(), fact }));
        }
        if links.get(vin) != Some(&step.link) {
            changed.insert(vin.to_owned(), step.link.clone());
            links.insert(vin.to_owned(), step.link);
        }
    };
    for observed in facts {
        match &observed.fact {
            VehicleFact::ConnectionChanged { online, vehicle_ts, received_at } => {
                step(
                    &observed.vin,
                    Heard::Connection { online: *online, ts: *vehicle_ts },
                    *received_at,
                    &mut admitted,
                );
            }
            other => {
                step(&observed.vin, Heard::Message, other.received_at(), &mut admitted);
                admitted.push(Cow::Borrowed(observed));
            }
        }
    }
    for (vin, at) in heard {
        step(vin, Heard::Message, *at, &mut admitted);
    }
    for (vin, link) in &changed {
        save(conn, vin, link).await?;
    }
    Ok((admitted, ignored))
}

/// The links of `vins`, locked for the rest of the transaction. PostgreSQL: a transaction lock per
/// VIN, taken in the order of their lock keys (each key once: two VINs may share one), so two
/// instances deciding the same vehicles (a shared subscription) take turns, also on a vehicle not
/// in the table yet, and never deadlock. SQLite's write lock is already held.
async fn load(conn: &mut Conn<'_>, vins: &[&str]) -> Result<HashMap<String, Link>, sqlx::Error> {
    if let Conn::Postgres(c) = conn {
        let lock = "SELECT count(pg_advisory_xact_lock(k)) FROM \
                    (SELECT DISTINCT hashtext('tacho-link:' || v) AS k FROM unnest($1::text[]) v ORDER BY k) keys";
        sqlx::query(lock).bind(vins).execute(&mut **c).await?;
    }
    let sql = format!(
        "SELECT vin, connected, session_ts, ended_ts, changed_at FROM vehicle_links WHERE {}",
        conn.dialect().in_json_list("vin", "$1")
    );
    type Row = (String, bool, Option<DateTime<Utc>>, Option<DateTime<Utc>>, DateTime<Utc>);
    let rows: Vec<Row> = Sql::new(&sql).bind(json!(vins)).fetch_all(&mut *conn).await?;
    Ok(rows
        .into_iter()
        .map(|(vin, connected, session, ended, changed_at)| (vin, Link { connected, session, ended, changed_at }))
        .collect())
}

async fn save(conn: &mut Conn<'_>, vin: &str, link: &Link) -> Result<(), sqlx::Error> {
    let sql =
        "INSERT INTO vehicle_links (vin, connected, session_ts, ended_ts, changed_at) VALUES ($1, $2, $3, $4, $5) \
               ON CONFLICT (vin) DO UPDATE SET connected = $2, session_ts = $3, ended_ts = $4, changed_at = $5";
    Sql::new(sql)
        .bind(vin)
        .bind(link.connected)
        .bind(link.session)
        .bind(link.ended)
        .bind(link.changed_at)
        .execute(conn)
        .await?;
    Ok(())
}
