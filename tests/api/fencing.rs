//! Fenced single runners: a process acts only while its instance holds its lease, and a checkpoint
//! moves only forward and only for the lease's holder.

use crate::contract;
use crate::helpers::*;
use tacho::store::checkpoints;
use tacho::store::leases::Leases;
use tacho::store::log::Checkpoint;
use tacho::store::Db;

fn at(tx_id: i64, position: i64) -> Checkpoint {
    Checkpoint { tx_id, position }
}

async fn checkpoint(db: &Db, name: &str) -> Checkpoint {
    checkpoints::load(&mut db.acquire().await.unwrap().conn(), name).await.unwrap()
}

async fn advance(db: &Db, name: &str, to: Checkpoint, lease: Option<&tacho::store::leases::Lease>) -> bool {
    checkpoints::advance(&mut db.acquire().await.unwrap().conn(), name, to, lease).await.unwrap()
}

contract!(a_checkpoint_never_moves_backwards);
async fn a_checkpoint_never_moves_backwards(store: Store) {
    let Some(url) = fresh_store(store).await else { return };
    let db = tacho::app::database(&config(&url)).await.unwrap();
    assert!(advance(&db, "commands", at(3, 30), None).await);
    assert!(!advance(&db, "commands", at(3, 20), None).await, "backwards");
    assert!(!advance(&db, "commands", at(2, 90), None).await, "an older transaction");
    assert!(!advance(&db, "commands", at(3, 30), None).await, "where it stands");
    assert_eq!(checkpoint(&db, "commands").await, at(3, 30));
    assert!(advance(&db, "commands", at(4, 1), None).await);
    assert_eq!(checkpoint(&db, "commands").await, at(4, 1));
}

#[tokio::test]
async fn a_process_runs_on_the_holder_of_its_lease_only_and_a_lost_lease_moves_nothing() {
    let Some(url) = fresh_database().await else { return };
    let db = tacho::app::database(&config(&url)).await.unwrap();
    let (a, b) = (Leases::new(db.clone(), "instance-a"), Leases::new(db.clone(), "instance-b"));
    let first = a.try_take("dispatcher").await.unwrap().expect("a free lease is taken");
    assert!(first.check().is_ok());
    assert!(b.try_take("dispatcher").await.unwrap().is_none(), "held by a, not expired");
    assert!(advance(&db, "dispatcher", at(1, 10), Some(&first)).await);

    // a can no longer renew (its connections were cut, the database failed over ...) and the
    // lease runs out on the database's clock: b takes it, with a higher epoch.
    let Db::Postgres(pool) = &db else { unreachable!() };
    sqlx::query("UPDATE process_leases SET expires_at = clock_timestamp() - interval '1 second'")
        .execute(pool)
        .await
        .unwrap();
    let second = b.try_take("dispatcher").await.unwrap().expect("an expired lease is taken over");
    assert!(second.epoch() > first.epoch());

    // a's next renewal finds the lease gone: it stops acting, and its checkpoint writes are refused.
    a.renew().await.unwrap();
    assert!(first.check().is_err(), "a knows it lost the lease");
    assert!(!advance(&db, "dispatcher", at(2, 20), Some(&first)).await, "the old holder is fenced off");
    assert_eq!(checkpoint(&db, "dispatcher").await, at(1, 10));
    assert!(advance(&db, "dispatcher", at(2, 20), Some(&second)).await);

    // A clean stop hands the lease over at once.
    b.release(&second).await;
    assert!(second.check().is_err());
    let third = a.try_take("dispatcher").await.unwrap().expect("released: taken at once");
    assert!(third.epoch() > second.epoch());
    b.renew().await.unwrap();
    a.renew().await.unwrap();
    assert!(third.check().is_ok(), "renewed by its holder");
}
