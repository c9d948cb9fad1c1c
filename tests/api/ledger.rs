//! The ledger writer itself, below the HTTP surface: what a batch does when
//! the database refuses the rows it sends together.

use chrono::Utc;
use futures_util::future::join_all;

use crate::helpers::{Backend, TestDb};
use gatekeeper::store::ledger::Ledger;
use gatekeeper::store::licenses::IdempotencyRecord;
use gatekeeper::store::{Store, StoreError};

fn record(body: &str) -> IdempotencyRecord {
    IdempotencyRecord {
        fingerprint: "f".into(),
        status: 201,
        body: body.into(),
        audit_seq: None,
        event: None,
    }
}

/// A migrated store at `url` (its lock waits bounded by `lock_timeout`), and
/// a ledger writing to it (batches of up to 64, two out at once) whose
/// callers wait `answer_within` for their answers.
fn ledger_on(
    url: &gatekeeper::config::DatabaseUrl,
    lock_timeout: Option<std::time::Duration>,
    answer_within: std::time::Duration,
) -> (Store, Ledger) {
    let store = match lock_timeout {
        Some(bound) => Store::connect_bounded(url, 4, bound),
        None => Store::connect(url, 4),
    }
    .unwrap();
    store.migrate().unwrap();
    // Two batches out at once on PostgreSQL: a batch that fails takes the
    // one sent after it back to the locked path.
    let ledger = Ledger::start_with_depth(store.clone(), 64, 2, |_| {}, answer_within).unwrap();
    (store, ledger)
}

/// Another replica stores key `k0` after this replica's request checked for
/// it and before the batch commits. The batch's multi-row insert is then
/// refused; the batch runs again write by write, the late write reads the
/// key (and is told of the stored response), and its batch-mates commit.
async fn a_key_stored_elsewhere_mid_batch(backend: Backend) {
    let Some((db, url)) = TestDb::create(backend) else {
        return;
    };
    let (store, ledger) = ledger_on(&url, None, std::time::Duration::from_secs(30));
    let stored_elsewhere = format!(
        "INSERT INTO idempotency_keys (reseller, idem_key, fingerprint, status, body, created_at, expires_at) \
         VALUES ('alpha', 'k0', 'f', 201, 'the other replica''s answer', '{}', '9999-01-01T00:00:00.000000Z')",
        gatekeeper::store::format_instant(Utc::now())
    );
    db.execute(&stored_elsewhere).unwrap();

    let writes = (0..12).map(|n| {
        let key = format!("k{n}");
        ledger.submit(move |conn, head| {
            let now = Utc::now();
            if let Some(found) = head.idempotency(conn, "alpha", &key, now)? {
                return Ok(format!("replayed: {}", found.body));
            }
            head.save_idempotency("alpha", &key, &record(&format!("answer {n}")), now);
            Ok::<_, StoreError>(format!("stored {n}"))
        })
    });
    let results: Vec<String> = join_all(writes)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(results[0], "replayed: the other replica's answer");
    for (n, result) in results.iter().enumerate().skip(1) {
        assert_eq!(result, &format!("stored {n}"));
    }
    for n in 0..12 {
        let found = store
            .idempotency("alpha", &format!("k{n}"))
            .unwrap()
            .unwrap();
        let want = if n == 0 {
            "the other replica's answer".to_string()
        } else {
            format!("answer {n}")
        };
        assert_eq!(found.body, want);
    }
    drop(ledger);
}

#[actix_web::test]
async fn a_key_stored_elsewhere_mid_batch_is_read_not_duplicated_sqlite() {
    a_key_stored_elsewhere_mid_batch(Backend::Sqlite).await;
}

#[actix_web::test]
async fn a_key_stored_elsewhere_mid_batch_is_read_not_duplicated_postgres() {
    a_key_stored_elsewhere_mid_batch(Backend::Postgres).await;
}

/// A caller that stops waiting (its request answered `503`) before its
/// write's batch starts: the write is never run, so nothing is recorded
/// that the caller was told failed.
#[actix_web::test]
async fn a_write_whose_caller_stopped_waiting_is_never_run() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    let (_db, url) = TestDb::create(Backend::Sqlite).unwrap();
    let (_, ledger) = ledger_on(&url, None, Duration::from_millis(200));
    // The first write keeps the writer busy past the second caller's wait.
    let started = Arc::new(AtomicBool::new(false));
    let slow = ledger.submit({
        let started = Arc::clone(&started);
        move |_, _| {
            started.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(600));
            Ok::<_, StoreError>(())
        }
    });
    let ran = Arc::new(AtomicBool::new(false));
    let late = {
        let ran = Arc::clone(&ran);
        async {
            // Queued once the slow write runs, so not in its batch.
            while !started.load(Ordering::SeqCst) {
                actix_web::rt::time::sleep(Duration::from_millis(5)).await;
            }
            ledger
                .submit(move |_, _| {
                    ran.store(true, Ordering::SeqCst);
                    Ok::<_, StoreError>(())
                })
                .await
        }
    };
    let (slow, late) = futures_util::future::join(slow, late).await;
    assert!(
        matches!(&slow, Err(StoreError::OutcomeUnknown(_))),
        "{slow:?}"
    );
    assert!(
        matches!(&late, Err(StoreError::OutcomeUnknown(_))),
        "{late:?}"
    );
    // Dropping the ledger lets the writer finish what is queued: it skips
    // the abandoned write.
    drop(ledger);
    assert!(!ran.load(Ordering::SeqCst), "the abandoned write ran");
}

/// A batch that failed after waiting a whole lock timeout (a table locked
/// elsewhere) is not run again write by write: each write runs once and
/// fails, in about one lock timeout, not two.
#[actix_web::test]
async fn a_batch_that_waited_out_a_lock_is_not_run_again() {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    let Some((_db, url)) = crate::helpers::postgres_db() else {
        return;
    };
    let (_, ledger) = ledger_on(
        &url,
        Some(Duration::from_millis(300)),
        Duration::from_secs(30),
    );
    let gatekeeper::config::DatabaseUrl::Postgres(pg) = &url else {
        unreachable!()
    };
    let mut locker = diesel::pg::PgConnection::establish(pg).unwrap();
    locker
        .batch_execute("BEGIN; LOCK TABLE idempotency_keys IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let writes = (0..4).map(|n| {
        let runs = Arc::clone(&runs);
        ledger.submit(move |_, head| {
            runs.fetch_add(1, Ordering::SeqCst);
            head.save_idempotency("alpha", &format!("k{n}"), &record("r"), Utc::now());
            Ok::<_, StoreError>(())
        })
    });
    let results = join_all(writes).await;
    locker.batch_execute("ROLLBACK").unwrap();
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(StoreError::BatchFailed(_)))),
        "{results:?}"
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        4,
        "each write ran once: the batch was not run again"
    );
    drop(ledger);
}
