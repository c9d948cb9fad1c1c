//! The ledger writer: group commit for every audited write of a process.
//!
//! Requests hand their write to [`Ledger::submit`] as a closure. One writer
//! thread takes whatever is queued (up to `max_batch`, never waiting for
//! more) as a batch. On PostgreSQL it runs the batch on the head it
//! predicts and sends it as one statement ([`pipeline`], which runs the
//! writes arriving meanwhile into the next batch, and falls back to the
//! locked path below when a batch fails or needs the lock). On SQLite, and
//! in that fallback, it opens one transaction, locks the ledger head once,
//! runs each write (which hands its rows to the [`Head`] rather than
//! sending them), sends the batch's rows as one multi-row insert per table,
//! commits, and only then answers each caller. A write that fails is undone
//! alone.
//!
//! If the batch fails before its commit, it is run once more in eager mode
//! (each write in a savepoint of its own, its rows sent at its end, on a new
//! connection), so that a write whose rows the database refuses fails alone
//! and its batch-mates go on; unless the batch already took as long as a
//! lock may be waited for (the store's lock timeout), as when a table is
//! locked elsewhere: running it again would wait as long again, past its
//! callers' time, and each of its writes then fails. If the commit fails,
//! every write of the batch is told so: none of it is in the database. If the
//! connection dies during the commit, the batch may or may not be in the
//! database: its callers are told exactly that, and it is not run again.
//!
//! A caller waits for its answer for a bounded time; a write whose caller
//! has stopped waiting before its batch starts is dropped, never run.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crossbeam_channel as channel;

use super::{locked, DbConn, Head, Store, StoreError};
use diesel::Connection;

/// Why a batch did not commit. `unknown` when the writes ran but the
/// commit's answer did not come (the connection died): the batch may be in
/// the database, so it is neither run again nor reported as not recorded.
struct Failure {
    why: String,
    unknown: bool,
}

/// Runs a batch in one transaction (opening the writer's connection if it
/// has none); why it failed, if it did.
fn attempt(
    store: &Store,
    own: &mut Option<DbConn>,
    jobs: &mut [Job],
    eager: bool,
) -> Result<(), Failure> {
    let mut committing = false;
    // A panic in a write must not take the writer down with it: the batch
    // is then abandoned (its callers get an error) and the next one runs.
    let settled = catch_unwind(AssertUnwindSafe(|| {
        let conn = match own.as_mut() {
            Some(conn) => conn,
            None => own.insert(store.dedicated_connection()?),
        };
        conn.transaction(|c| {
            let ran = locked(c, |c, head| {
                head.set_eager(eager);
                for job in jobs.iter_mut() {
                    job.run(c, head)?;
                }
                Ok(())
            });
            committing = ran.is_ok();
            ran
        })
    }));
    match settled {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Failure {
            why: e.to_string(),
            unknown: committing && connection_lost(&e),
        }),
        Err(_) => Err(Failure {
            why: "a write panicked".to_string(),
            unknown: false,
        }),
    }
}

/// A write waiting in the queue: it can be run more than once (the last run
/// counts), and is then settled: its caller is told how it ended.
trait Write: Send {
    /// Runs the write, keeping its result. An `Err` is the batch's own
    /// failure (the database refused a savepoint, say).
    fn run(&mut self, conn: &mut DbConn, head: &mut Head) -> Result<(), StoreError>;
    /// Tells the caller: `failure` is `None` when the batch committed.
    fn settle(self: Box<Self>, failure: Option<&Failure>);
    /// Whether the caller has stopped waiting for the answer.
    fn abandoned(&self) -> bool;
}

struct Queued<T, F> {
    write: F,
    result: Option<Result<T, StoreError>>,
    reply: tokio::sync::oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Write for Queued<T, F>
where
    T: Send,
    F: FnMut(&mut DbConn, &mut Head) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, conn: &mut DbConn, head: &mut Head) -> Result<(), StoreError> {
        head.begin(conn)?;
        let mut result = (self.write)(conn, head);
        if result.is_ok() {
            if let Err(e) = head.settle(conn) {
                result = Err(e);
            }
        }
        head.end(conn, result.is_ok())?;
        self.result = Some(result);
        Ok(())
    }

    fn settle(self: Box<Self>, failure: Option<&Failure>) {
        let settled = match (failure, self.result) {
            (None, Some(result)) => result,
            (None, None) => Err(StoreError::BatchFailed("the write did not run".into())),
            (Some(f), _) if f.unknown => Err(StoreError::OutcomeUnknown(f.why.clone())),
            (Some(f), _) => Err(StoreError::BatchFailed(f.why.clone())),
        };
        let _ = self.reply.send(settled);
    }

    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

type Job = Box<dyn Write>;

/// The handle requests submit writes to.
pub struct Ledger {
    sender: Option<channel::Sender<Job>>,
    writer: Option<std::thread::JoinHandle<()>>,
    max_batch: usize,
    /// How long a caller waits for its write's answer.
    answer_within: std::time::Duration,
}

impl Drop for Ledger {
    /// Lets the writer finish what is queued, then waits for it, so that its
    /// connections are closed before whoever dropped the ledger goes on
    /// (a detached thread closing connections while the process exits races
    /// with the TLS library's own clean-up).
    fn drop(&mut self) {
        self.sender.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("max_batch", &self.max_batch)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Starts the writer thread. `max_batch` 1 turns batching off (one
    /// transaction per write), for comparison. A caller waits at most
    /// `answer_within` for its write's answer. `batch_sizes` is told how
    /// many writes each batch holds (the caller records it).
    pub fn start(
        store: Store,
        max_batch: usize,
        batch_sizes: impl Fn(usize) + Send + 'static,
        answer_within: std::time::Duration,
    ) -> std::io::Result<Ledger> {
        Ledger::start_with_depth(store, max_batch, SERVICE_DEPTH, batch_sizes, answer_within)
    }

    /// [`Ledger::start`] with up to `depth` PostgreSQL batches out at once
    /// (see [`pipeline`]; SQLite's writer runs one batch at a time).
    pub fn start_with_depth(
        store: Store,
        max_batch: usize,
        depth: usize,
        batch_sizes: impl Fn(usize) + Send + 'static,
        answer_within: std::time::Duration,
    ) -> std::io::Result<Ledger> {
        let (sender, receiver) = channel::bounded::<Job>(QUEUE);
        let max_batch = max_batch.max(1);
        let writer = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || run(&store, &receiver, max_batch, depth, &batch_sizes))?;
        Ok(Ledger {
            sender: Some(sender),
            writer: Some(writer),
            max_batch,
            answer_within,
        })
    }

    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Runs `write` in the next batch, under the locked ledger head, and
    /// returns its result once the batch has committed. An `Err` from
    /// `write` rolls back that write alone. `write` may be run twice (the
    /// batch run again eagerly): only its last run counts.
    ///
    /// With no answer within the ledger's bound, this fails: the write is
    /// then either never run (its batch had not started) or in a batch that
    /// may still commit, which is why a licence request is retried with the
    /// same idempotency key.
    pub async fn submit<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut DbConn, &mut Head) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel::<Result<T, StoreError>>();
        let job: Job = Box::new(Queued {
            write,
            result: None,
            reply,
        });
        self.sender
            .as_ref()
            .ok_or_else(|| StoreError::BatchFailed("the ledger writer has stopped".into()))?
            .try_send(job)
            .map_err(|e| match e {
                channel::TrySendError::Full(_) => {
                    StoreError::BatchFailed("the ledger writer's queue is full".into())
                }
                channel::TrySendError::Disconnected(_) => {
                    StoreError::BatchFailed("the ledger writer has stopped".into())
                }
            })?;
        match tokio::time::timeout(self.answer_within, answer).await {
            Ok(answer) => {
                answer.map_err(|_| StoreError::BatchFailed("the batch could not start".into()))?
            }
            Err(_) => Err(StoreError::OutcomeUnknown(format!(
                "no answer from the database within {} ms",
                self.answer_within.as_millis()
            ))),
        }
    }
}

/// PostgreSQL batches the service's writer has out at once. One: the next
/// batch is prepared on the predicted head while the one out commits, and
/// sent once it has. Two (the next sent at once, to wait on the head's row
/// lock behind the one committing) was slower on the development machine,
/// whose two cores are busy under load, not idle: the batches halve and
/// the commits double (`benches/load.sh 10 64 3`, README, Performance).
pub const SERVICE_DEPTH: usize = 1;

/// Writes waiting for the writer, at most: past that, requests are told to
/// retry (`503`) rather than queue without bound.
const QUEUE: usize = 8192;

/// How often the writer forgets idempotency keys past their 24 hours.
const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Drops the writes whose callers gave up waiting (their answer was `503`):
/// nothing is written that nobody was told of.
fn drop_abandoned(jobs: &mut Vec<Job>) {
    let queued = jobs.len();
    jobs.retain(|job| !job.abandoned());
    if jobs.len() < queued {
        tracing::warn!(
            dropped = queued - jobs.len(),
            "dropped writes whose callers stopped waiting"
        );
    }
}

fn run(
    store: &Store,
    receiver: &channel::Receiver<Job>,
    max_batch: usize,
    depth: usize,
    batch_sizes: &dyn Fn(usize),
) {
    // BACKEND-SPECIFIC: PostgreSQL's batches go out as one statement each,
    // overlapping; SQLite's (in-process, one writer) under the lock.
    if store.is_postgres() {
        pipeline::run(store, receiver, max_batch, depth, batch_sizes);
        return;
    }
    let mut purged = std::time::Instant::now();
    // The writer's own connection, outside the pool (readers never keep it
    // waiting), opened again after a batch fails.
    let mut own: Option<DbConn> = None;
    while let Ok(first) = receiver.recv() {
        let mut jobs = vec![first];
        gather(receiver, &mut jobs, max_batch);
        if jobs.is_empty() {
            continue;
        }
        batch_sizes(jobs.len());
        let failure = run_locked(store, &mut own, &mut jobs, std::time::Instant::now());
        for job in jobs {
            job.settle(failure.as_ref());
        }
        purge_now_and_then(store, &mut purged);
    }
}

/// Adds whatever is queued to `jobs` (up to `max_batch`, never waiting),
/// then drops the writes nobody waits for.
fn gather(receiver: &channel::Receiver<Job>, jobs: &mut Vec<Job>, max_batch: usize) {
    while jobs.len() < max_batch {
        match receiver.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
    drop_abandoned(jobs);
}

/// Runs a batch under the locked head; if it fails, runs it again write by
/// write (see the module's documentation for when it does not). `started`
/// is when the batch was first sent. `None` when it committed.
fn run_locked(
    store: &Store,
    own: &mut Option<DbConn>,
    jobs: &mut Vec<Job>,
    started: std::time::Instant,
) -> Option<Failure> {
    let mut failure = attempt(store, own, jobs, false).err();
    if let Some(first) = &failure {
        // Not run again: a batch whose commit went unanswered (it may be
        // in the database), and one that failed after as long as a lock
        // may be waited for (a table locked elsewhere): running it again
        // would wait as long again, past its callers' time.
        if first.unknown || spent(store, started) {
            tracing::info!(error = %first.why, writes = jobs.len(), unknown = first.unknown, "a ledger batch failed; not running it again");
        } else {
            tracing::info!(error = %first.why, writes = jobs.len(), "a ledger batch failed; running it again write by write");
            *own = None;
            drop_abandoned(jobs);
            failure = attempt(store, own, jobs, true).err();
        }
    }
    if let Some(failed) = &failure {
        tracing::warn!(error = %failed.why, writes = jobs.len(), "a ledger batch failed");
        *own = None;
    }
    failure
}

/// Whether a batch sent at `started` has already waited as long as a lock
/// may be waited for.
fn spent(store: &Store, started: std::time::Instant) -> bool {
    store.lock_timeout().is_some_and(|t| started.elapsed() >= t)
}

fn purge_now_and_then(store: &Store, purged: &mut std::time::Instant) {
    if purged.elapsed() >= PURGE_EVERY {
        *purged = std::time::Instant::now();
        match store.purge_idempotency() {
            Ok(n) => tracing::debug!(purged = n, "forgot expired idempotency keys"),
            Err(e) => tracing::warn!(error = %e, "could not purge expired idempotency keys"),
        }
    }
}

/// Whether an error means the connection was lost (the statement may have
/// reached the database and committed).
fn connection_lost(e: &StoreError) -> bool {
    use diesel::result::{DatabaseErrorKind as Kind, Error};
    matches!(
        e,
        StoreError::Database(Error::DatabaseError(
            Kind::ClosedConnection | Kind::UnableToSendCommand,
            _
        ))
    )
}

mod pipeline;
