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

/// On PostgreSQL, writes that arrive while a batch is out are run into the
/// next batch at once, on the head the batch out will leave. When that
/// batch does not commit (here another replica's uncommitted insert of the
/// same idempotency key holds it, then commits: a unique violation), the
/// next batch is run again on the head as it stands, never sent on the
/// predicted one: every write is answered as if the batches had run one
/// after the other, and the chain holds exactly the events that committed,
/// in order, and verifies.
#[actix_web::test]
async fn writes_arriving_while_a_batch_commits_are_prepared_then_prepared_again_if_it_fails() {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    use gatekeeper::domain::Actor;
    use gatekeeper::store::audit::{append_event, NewEvent};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    let Some((db, url)) = crate::helpers::postgres_db() else {
        return;
    };
    let store = Store::connect(&url, 4).unwrap();
    store.migrate().unwrap();
    // The service's ledger: one batch out at a time.
    let ledger =
        Arc::new(Ledger::start(store.clone(), 64, |_| {}, Duration::from_secs(30)).unwrap());
    let gatekeeper::config::DatabaseUrl::Postgres(pg) = &url else {
        unreachable!()
    };
    let mut replica = diesel::pg::PgConnection::establish(pg).unwrap();
    replica
        .batch_execute(&format!(
            "BEGIN; INSERT INTO idempotency_keys (reseller, idem_key, fingerprint, status, body, created_at, expires_at) \
             VALUES ('alpha', 'k0', 'f', 201, 'the other replica''s answer', '{}', '9999-01-01T00:00:00.000000Z')",
            gatekeeper::store::format_instant(Utc::now())
        ))
        .unwrap();
    let start = db.count("SELECT seq AS n FROM ledger_head WHERE id = 1");
    // Each write stores its key and appends an event, unless the key is
    // stored already; `seen` keeps the seq each run of each write appended.
    let seen: Arc<Mutex<Vec<Vec<i64>>>> = Arc::new(Mutex::new(vec![Vec::new(); 9]));
    let write = |n: usize| {
        let seen = Arc::clone(&seen);
        let ledger = Arc::clone(&ledger);
        async move {
            ledger
                .submit(move |conn, head| {
                    let key = format!("k{n}");
                    let now = Utc::now();
                    if let Some(found) = head.idempotency(conn, "alpha", &key, now)? {
                        return Ok(format!("replayed: {}", found.body));
                    }
                    let event = NewEvent {
                        action: "test.write".into(),
                        actor: Actor::system(),
                        outcome: None,
                        decision: None,
                        subject: serde_json::json!({ "kind": "test", "n": n }),
                        reseller: None,
                    };
                    let seq = append_event(head, event, "1", now)?;
                    seen.lock().unwrap()[n].push(seq);
                    head.save_idempotency("alpha", &key, &record(&format!("answer {n}")), now);
                    Ok::<_, StoreError>(format!("stored {n}"))
                })
                .await
        }
    };
    // The first write's batch goes out and waits on the replica's key.
    let first = actix_web::rt::spawn(write(0));
    let waiting = "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() \
                   AND wait_event_type = 'Lock' AND query LIKE 'WITH h AS%'";
    let mut out = false;
    for _ in 0..200 {
        if db.count(waiting) > 0 {
            out = true;
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(out, "the first batch never went out");
    // Eight more while it waits: each runs on the head it will leave.
    let rest: Vec<_> = (1..9).map(|n| actix_web::rt::spawn(write(n))).collect();
    let mut prepared = false;
    for _ in 0..200 {
        if seen.lock().unwrap()[1..].iter().all(|runs| runs.len() == 1) {
            prepared = true;
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        prepared,
        "the writes were not run while the batch was out: {:?}",
        seen.lock().unwrap()
    );
    assert_eq!(seen.lock().unwrap()[0], vec![start + 1]);
    for n in 1..9 {
        assert_eq!(seen.lock().unwrap()[n], vec![start + 1 + n as i64]);
    }
    // The replica commits: the first batch is refused, runs again under the
    // lock (where its write reads the key), and the next batch runs again.
    replica.batch_execute("COMMIT").unwrap();
    assert_eq!(
        first.await.unwrap().unwrap(),
        "replayed: the other replica's answer"
    );
    for (n, answer) in (1..9).zip(join_all(rest).await) {
        assert_eq!(answer.unwrap().unwrap(), format!("stored {n}"));
    }
    let seen = seen.lock().unwrap().clone();
    for (n, runs) in seen.iter().enumerate().skip(1) {
        // Last run (the one that counts) on the head as it stood.
        assert_eq!(
            runs.last(),
            Some(&(start + n as i64)),
            "write {n}: {runs:?}"
        );
    }
    drop(ledger);
    let report = store.verify_chain(&[], &[]).unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.head.map(|(seq, _)| seq), Some(start + 8));
    for n in 1..9 {
        let found = store
            .idempotency("alpha", &format!("k{n}"))
            .unwrap()
            .unwrap();
        assert_eq!(found.body, format!("answer {n}"));
    }
}
