//! The ledger writer on PostgreSQL: batches prepared against a predicted
//! head and sent as one statement each, the next prepared while the one
//! before it commits.
//!
//! The writer keeps the head its batches leave in memory. It runs a
//! batch's writes against that head (reads on its own connection, in
//! autocommit), hands the rows to one of two committers, each a thread with
//! a connection of its own, which sends them with the head check as one
//! statement ([`crate::store::commit`]), and goes on to the next batch while
//! that one commits. At most `depth` batches are out at once (with two:
//! the one committing and the one waiting on the head's row lock behind
//! it); with one, the next batch is prepared only once the one before has
//! landed, which is what the service runs ([`super::SERVICE_DEPTH`] says
//! why). Callers are answered in the order their batches were sent, each
//! once its batch has committed.
//!
//! A batch that does not commit (the database refused it, another replica
//! moved the head, the connection was lost) takes every batch sent after it
//! with it: they were prepared on its head, so their head check fails and
//! they write nothing. The writer then waits for each of them and runs
//! them again, in order, under the locked head as [`super::run_locked`]
//! does, which reads the head afresh; so does a batch with a write that
//! needs the lock itself ([`Head::immediate`]: catalogue changes, reviews,
//! impact runs, webhook endpoints), after the batches before it have
//! landed. A batch whose statement went unanswered (the connection died)
//! may be in the database. Once its backend is gone (terminated, say) the
//! committer asks whether the chain holds the batch's last event: then it
//! committed; if not, it never will, and it is run again like a refused
//! one. While the backend lives on, or when the database cannot be asked,
//! it is not run again and its callers are told the outcome is unknown,
//! unless it moved the head on and a batch sent after it committed, which
//! proves it did (the later batch's head check found the head it left).
//! A batch that appends nothing to the chain proves nothing of the batch
//! before it: the head check cannot tell whether that one committed, so
//! each is judged on its own outcome.

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use diesel::connection::SimpleConnection;
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Integer, Text};

use super::{connection_lost, gather, purge_now_and_then, run_locked, spent, Failure, Job};
use crate::store::commit::{self, Advance, Sent};
use crate::store::head::Pending;
use crate::store::licenses::LicenseRow;
use crate::store::schema::ledger_head;
use crate::store::{DbConn, Head, Store, StoreError};

/// The head as the batches sent so far leave it, if they commit.
#[derive(Debug, Clone)]
struct Predicted {
    seq: i64,
    hash: String,
    catalog_version: i64,
    /// The next free status-list index, once a batch has read it.
    next_status_idx: Option<i64>,
}

/// How a batch that was sent came out.
enum Landed {
    Committed,
    /// It wrote no row, so nothing was sent: it stands if the batches
    /// before it do.
    Nothing,
    HeadMoved,
    Failed(Failure),
}

/// A batch sent, or with nothing to send.
struct Flight {
    jobs: Vec<Job>,
    sent_at: Instant,
    outcome: Option<mpsc::Receiver<Landed>>,
    /// The licences it changes, as it leaves them (what the batches after
    /// it read until it has landed).
    changed: Vec<LicenseRow>,
    /// Whether it moves the head on (appends to the chain): only then does
    /// a later batch's commit prove that this one committed.
    advances: bool,
}

impl Flight {
    fn land(&mut self) -> Landed {
        match self.outcome.take() {
            None => Landed::Nothing,
            Some(outcome) => outcome.recv().unwrap_or_else(|_| {
                Landed::Failed(Failure {
                    why: "the ledger's committer stopped".into(),
                    unknown: true,
                })
            }),
        }
    }
}

type Task = (Advance, Pending, mpsc::SyncSender<Landed>);

/// A thread with a connection of its own that sends batches' statements.
struct Committer {
    tasks: Option<mpsc::SyncSender<Task>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Committer {
    /// `custom_plans`: its connection plans the statement for each batch's
    /// arrays (see [`send`]).
    fn start(store: &Store, n: usize, custom_plans: bool) -> std::io::Result<Committer> {
        let (tasks, incoming) = mpsc::sync_channel::<Task>(1);
        let store = store.clone();
        let thread = std::thread::Builder::new()
            .name(format!("ledger-commit-{n}"))
            .spawn(move || {
                let mut own: Option<(DbConn, i32)> = None;
                for (advance, rows, reply) in incoming {
                    let _ = reply.send(send(&store, &mut own, custom_plans, &advance, &rows));
                }
            })?;
        Ok(Committer {
            tasks: Some(tasks),
            thread: Some(thread),
        })
    }

    fn send(&self, advance: Advance, rows: Pending) -> mpsc::Receiver<Landed> {
        let (reply, outcome) = mpsc::sync_channel(1);
        if let Some(tasks) = &self.tasks {
            // If the thread is gone, `reply` is dropped with the task and the
            // flight lands as failed, outcome unknown.
            let _ = tasks.send((advance, rows, reply));
        }
        outcome
    }
}

impl Drop for Committer {
    /// Lets the thread finish and close its connection.
    fn drop(&mut self) {
        self.tasks.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sends one batch's statement on the committer's connection (with the
/// process id of its PostgreSQL backend).
fn send(
    store: &Store,
    own: &mut Option<(DbConn, i32)>,
    custom_plans: bool,
    advance: &Advance,
    rows: &Pending,
) -> Landed {
    let mut backend = None;
    let sent = catch_unwind(AssertUnwindSafe(|| {
        let (conn, pid) = match own.as_mut() {
            Some(own) => own,
            None => {
                let mut conn = store.dedicated_connection()?;
                // Batches that change licences are planned for their arrays
                // each time: a plan kept from a batch sent while `licenses`
                // was small joins a renewal's rows by scanning the table
                // once it is not (renewals fell from about 1,900 to 1,100 a
                // second after ten seconds of issuance). The others keep
                // the plan: planning the statement for every preflight
                // batch cost about a tenth of their rate.
                if custom_plans {
                    conn.batch_execute("SET plan_cache_mode = force_custom_plan")?;
                }
                let pid =
                    diesel::select(sql::<Integer>("pg_backend_pid()")).get_result(&mut conn)?;
                own.insert((conn, pid))
            }
        };
        backend = Some(*pid);
        match conn {
            DbConn::Postgres(pg) => commit::send(pg, advance, rows),
            DbConn::Sqlite(_) => Err(StoreError::BatchFailed(
                "one-statement batches are PostgreSQL's".into(),
            )),
        }
    }));
    match sent {
        Ok(Ok(Sent::Committed)) => Landed::Committed,
        Ok(Ok(Sent::HeadMoved)) => Landed::HeadMoved,
        Ok(Err(e)) => {
            // A new connection for the next batch: this one may be dead
            // without saying so (its backend terminated while it was idle
            // fails the next statement with an error of its own).
            *own = None;
            if !connection_lost(&e) {
                return Landed::Failed(Failure {
                    why: e.to_string(),
                    unknown: false,
                });
            }
            // The statement is its own commit: the connection lost, it is
            // unknown whether it committed, unless the backend is found gone.
            match backend.map(|pid| settled_after_loss(store, pid, advance)) {
                Some(Some(true)) => Landed::Committed,
                Some(Some(false)) => Landed::Failed(Failure {
                    why: format!("{e} (its backend ended without committing it)"),
                    unknown: false,
                }),
                _ => Landed::Failed(Failure {
                    why: e.to_string(),
                    unknown: true,
                }),
            }
        }
        Err(_) => {
            *own = None;
            Landed::Failed(Failure {
                why: "sending a batch panicked".into(),
                unknown: true,
            })
        }
    }
}

/// Whether a batch whose connection was lost committed, when that can be
/// known: once its backend `pid` has ended (it was terminated, say), its
/// statement either committed or never will, and it committed if the chain
/// holds the batch's last event (its hash is the head the batch predicted).
/// `None` while the backend lives on (the statement may yet commit), for a
/// batch that appends no event, and when the database cannot be asked.
fn settled_after_loss(store: &Store, pid: i32, advance: &Advance) -> Option<bool> {
    if advance.to_seq == advance.from_seq {
        return None;
    }
    let mut conn = store.dedicated_connection().ok()?;
    let alive: bool = diesel::select(
        sql::<Bool>("EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = ")
            .bind::<Integer, _>(pid)
            .sql(")"),
    )
    .get_result(&mut conn)
    .ok()?;
    if alive {
        return None;
    }
    diesel::select(
        sql::<Bool>("EXISTS (SELECT 1 FROM audit_events WHERE seq = ")
            .bind::<BigInt, _>(advance.to_seq)
            .sql(" AND hash = ")
            .bind::<Text, _>(&advance.to_hash)
            .sql(")"),
    )
    .get_result(&mut conn)
    .ok()
}

/// Licences whose committed versions the writer keeps, at most (then it
/// forgets them all; a renewal read before is then read again only if its
/// batch fails).
const REMEMBERED: usize = 65_536;

/// A batch run against the predicted head.
enum Prepared {
    Rows {
        advance: Advance,
        rows: Box<Pending>,
        next_status_idx: Option<i64>,
    },
    /// A write needs the locked head (or the head could not be read).
    Locked,
}

fn read_head(conn: &mut DbConn) -> Result<Predicted, StoreError> {
    let (seq, hash, catalog_version) = ledger_head::table
        .filter(ledger_head::id.eq(1))
        .select((
            ledger_head::seq,
            ledger_head::hash,
            ledger_head::catalog_version,
        ))
        .first::<(i64, String, i64)>(conn)?;
    Ok(Predicted {
        seq,
        hash,
        catalog_version,
        next_status_idx: None,
    })
}

fn prepare(
    store: &Store,
    own: &mut Option<DbConn>,
    jobs: &mut [Job],
    predicted: &mut Option<Predicted>,
    flights: &VecDeque<Flight>,
    written: &Arc<HashMap<String, String>>,
) -> Prepared {
    let prepared = catch_unwind(AssertUnwindSafe(|| {
        let conn = match own.as_mut() {
            Some(conn) => conn,
            None => own.insert(store.dedicated_connection()?),
        };
        // Only with nothing out: the head as committed.
        let from = match predicted {
            Some(p) => p.clone(),
            None => read_head(conn)?,
        };
        let carried = flights.iter().flat_map(|f| f.changed.clone()).collect();
        let mut head = Head::predicted(
            from.seq,
            from.hash.clone(),
            from.catalog_version,
            from.next_status_idx,
            carried,
            Arc::clone(written),
        );
        for job in jobs.iter_mut() {
            job.run(conn, &mut head)?;
            if head.needs_lock() {
                return Ok(None);
            }
        }
        let advance = Advance {
            from_seq: from.seq,
            from_hash: from.hash,
            to_seq: head.seq,
            to_hash: head.hash.clone(),
            catalog_version: head.catalog_version,
        };
        let (rows, next_status_idx) = head.into_rows();
        Ok::<_, StoreError>(Some((advance, Box::new(rows), next_status_idx)))
    }));
    match prepared {
        Ok(Ok(Some((advance, rows, next_status_idx)))) => Prepared::Rows {
            advance,
            rows,
            next_status_idx,
        },
        Ok(Ok(None)) => Prepared::Locked,
        Ok(Err(e)) => {
            tracing::info!(error = %e, "could not prepare a ledger batch; running it under the lock");
            *own = None;
            Prepared::Locked
        }
        Err(_) => {
            *own = None;
            Prepared::Locked
        }
    }
}

/// The writer's loop with at most `depth` batches out at once, each sent
/// by a committer of its own.
pub(super) fn run(
    store: &Store,
    receiver: &mpsc::Receiver<Job>,
    max_batch: usize,
    depth: usize,
    batch_sizes: &dyn Fn(usize),
) {
    let depth = depth.max(1);
    // Per batch out: one committer for batches that change no licence,
    // one (planning each time) for those that do.
    let committers = match (0..depth * 2)
        .map(|n| Committer::start(store, n, n % 2 == 1))
        .collect::<std::io::Result<Vec<_>>>()
    {
        Ok(committers) => committers,
        Err(e) => {
            tracing::error!(error = %e, "could not start the ledger's committers");
            return;
        }
    };
    let mut turn = 0;
    let mut purged = Instant::now();
    // The writer's connection: reads while preparing, batches under the lock.
    let mut own: Option<DbConn> = None;
    let mut predicted: Option<Predicted> = None;
    let mut flights: VecDeque<Flight> = VecDeque::new();
    // The versions committed batches left licences at, so that a renewal
    // read before one of them committed reads the licence again rather
    // than failing its batch (see `Head::license_as_read`).
    let mut written: Arc<HashMap<String, String>> = Arc::default();
    loop {
        let mut jobs = Vec::new();
        if flights.is_empty() {
            match receiver.recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        gather(receiver, &mut jobs, max_batch);
        let idle = jobs.is_empty();
        if !idle {
            batch_sizes(jobs.len());
            match prepare(
                store,
                &mut own,
                &mut jobs,
                &mut predicted,
                &flights,
                &written,
            ) {
                Prepared::Rows {
                    advance,
                    rows,
                    next_status_idx,
                } => {
                    predicted = Some(Predicted {
                        seq: advance.to_seq,
                        hash: advance.to_hash.clone(),
                        catalog_version: advance.catalog_version,
                        next_status_idx,
                    });
                    let advances =
                        advance.to_seq != advance.from_seq || advance.to_hash != advance.from_hash;
                    let changed = rows
                        .changed_licenses()
                        .into_iter()
                        .map(|(_, r)| LicenseRow {
                            version: Some(r.at.clone()),
                            ..r.license.clone()
                        })
                        .collect();
                    let outcome = if rows.is_empty() {
                        None
                    } else {
                        turn = (turn + 1) % depth;
                        let kind = usize::from(!rows.renewals.is_empty());
                        Some(committers[turn * 2 + kind].send(advance, *rows))
                    };
                    flights.push_back(Flight {
                        jobs,
                        sent_at: Instant::now(),
                        outcome,
                        changed,
                        advances,
                    });
                }
                Prepared::Locked => {
                    while !flights.is_empty() {
                        land_oldest(store, &mut own, &mut flights, &mut predicted, &mut written);
                    }
                    predicted = None;
                    let failure = run_locked(store, &mut own, &mut jobs, Instant::now());
                    for job in jobs {
                        job.settle(failure.as_ref());
                    }
                }
            }
        }
        if flights.len() >= depth || (idle && !flights.is_empty()) {
            land_oldest(store, &mut own, &mut flights, &mut predicted, &mut written);
        }
        purge_now_and_then(store, &mut purged);
    }
}

/// Waits for the oldest batch out and answers its callers; if it did not
/// commit, lands every batch after it too, and runs again under the lock
/// each that did not commit (see the module's documentation).
fn land_oldest(
    store: &Store,
    own: &mut Option<DbConn>,
    flights: &mut VecDeque<Flight>,
    predicted: &mut Option<Predicted>,
    written: &mut Arc<HashMap<String, String>>,
) {
    let Some(mut first) = flights.pop_front() else {
        return;
    };
    let landed = first.land();
    if matches!(landed, Landed::Committed | Landed::Nothing) {
        let versions = Arc::make_mut(written);
        if versions.len() > REMEMBERED {
            versions.clear();
        }
        for row in &first.changed {
            if let Some(version) = &row.version {
                versions.insert(row.id.clone(), version.clone());
            }
        }
        for job in first.jobs {
            job.settle(None);
        }
        return;
    }
    // Every batch out was prepared on this one's head; what runs again
    // under the lock writes versions the writer does not keep.
    *predicted = None;
    *written = Arc::default();
    let mut out = vec![(first, landed)];
    while let Some(mut next) = flights.pop_front() {
        let landed = next.land();
        out.push((next, landed));
    }
    // A batch that committed was checked on the head its predecessor left,
    // so every batch before it that moved the head on committed too (a
    // batch that appends nothing leaves the head as it found it, and
    // proves nothing of the batch before it). A batch with nothing to send
    // stands if every batch before it does.
    let committed = out
        .iter()
        .rposition(|(_, landed)| matches!(landed, Landed::Committed));
    let mut all_before = true;
    for (n, (mut flight, landed)) in out.into_iter().enumerate() {
        let stands = match landed {
            Landed::Committed => true,
            Landed::Nothing => all_before,
            _ => flight.advances && committed.is_some_and(|last| n < last),
        };
        all_before &= stands;
        let failure = match landed {
            _ if stands => None,
            Landed::Failed(failed) if failed.unknown || spent(store, flight.sent_at) => {
                tracing::warn!(error = %failed.why, writes = flight.jobs.len(), unknown = failed.unknown, "a ledger batch failed; not running it again");
                Some(failed)
            }
            landed => {
                if let Landed::Failed(failed) = &landed {
                    tracing::info!(error = %failed.why, writes = flight.jobs.len(), "a ledger batch failed; running it again under the lock");
                }
                run_locked(store, own, &mut flight.jobs, flight.sent_at)
            }
        };
        for job in flight.jobs {
            job.settle(failure.as_ref());
        }
    }
}
