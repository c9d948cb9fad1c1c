//! The reads a licence request makes before its write (its idempotency
//! key's record, the licence it renews), batched across requests.
//!
//! Each read on its own took a hand-off to the blocking pool, a pooled
//! connection and a round trip to the database: during issuance that was
//! about a third of the machine (the pool's threads 14%, the backends
//! answering them about 16%), and issuing with no read at all ran 1.57
//! times as fast. Here one thread takes whatever reads are queued (up to
//! [`MAX_BATCH`], never waiting for more) and answers them with two
//! queries on a connection of its own ([`Store::before_license_writes`]);
//! a request waits on its answer as it waited on the pool. On PostgreSQL
//! that connection plans each query for its arrays
//! (`plan_cache_mode = force_custom_plan`): the plan PostgreSQL keeps for
//! `= ANY($1)` over any array scanned the whole of `idempotency_keys`, and
//! issuance fell to about 0.6 of the rate with the reads one by one.
//!
//! - **Nothing is decided on these reads alone.** They let a retry be
//!   answered from its record without deciding again, and a renewal be
//!   decided on the licence as it stood; the write itself is checked again
//!   in its batch (a key stored since makes the batch run again and read
//!   it; a licence changed since fails the renewal's statement), as before.
//! - **A batch the database fails** (gone, a lock held elsewhere past the
//!   store's lock timeout) fails each of its reads at once, as
//!   [`StoreError::BatchFailed`] (`503`, as a database error was), and is
//!   not read again: reading each again would make the last wait a lock
//!   timeout for every request before it (the fault drill
//!   `a_table_locked_elsewhere…` caught 8 s). The next batch opens a new
//!   connection.
//! - **A licence row that does not read back**, or a panic: each request
//!   of the batch reads on its own, in parallel on the blocking pool
//!   ([`Store::before_license_write`]), so the bad row fails only the
//!   request that reads it (`500`), as before; the thread goes on.
//! - **A full queue** (more than [`QUEUE`] reads waiting) or a stopped
//!   thread: the request reads on its own, on the blocking pool.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crossbeam_channel as channel;
use diesel::connection::SimpleConnection;

use super::licenses::{Ask, Before};
use super::{DbConn, Store, StoreError};

/// Reads answered together, at most.
pub const MAX_BATCH: usize = 256;

/// Reads waiting, at most; past that a request reads on its own.
const QUEUE: usize = 8192;

struct Lookup {
    ask: Ask,
    reply: tokio::sync::oneshot::Sender<Answer>,
}

/// What the thread tells a request.
enum Answer {
    Read(Box<Before>),
    /// The batch failed: why.
    Failed(String),
    /// Read on your own (what was asked, back).
    Alone(Ask),
}

/// The handle requests queue their reads on.
pub struct Lookups {
    store: Store,
    sender: Option<channel::Sender<Lookup>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Lookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookups").finish_non_exhaustive()
    }
}

impl Drop for Lookups {
    /// Lets the thread answer what is queued, then waits for it.
    fn drop(&mut self) {
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Lookups {
    /// Starts the thread.
    pub fn start(store: Store) -> std::io::Result<Lookups> {
        let (sender, receiver) = channel::bounded::<Lookup>(QUEUE);
        let reader = store.clone();
        let thread = std::thread::Builder::new()
            .name("license-reads".into())
            .spawn(move || run(&reader, &receiver))?;
        Ok(Lookups {
            store,
            sender: Some(sender),
            thread: Some(thread),
        })
    }

    /// [`Store::before_license_write`], read in the next batch.
    pub async fn before_license_write(&self, ask: Ask) -> Result<Before, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let queued = match &self.sender {
            Some(sender) => sender
                .try_send(Lookup { ask, reply })
                .map_err(|e| e.into_inner().ask),
            None => Err(ask),
        };
        let ask = match queued {
            Ok(()) => match answer.await {
                Ok(Answer::Read(before)) => return Ok(*before),
                Ok(Answer::Failed(why)) => return Err(StoreError::BatchFailed(why)),
                Ok(Answer::Alone(ask)) => ask,
                Err(_) => {
                    return Err(StoreError::BatchFailed(
                        "the licence reads' thread stopped".into(),
                    ))
                }
            },
            Err(ask) => ask,
        };
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || alone(&store, &ask))
            .await
            .map_err(|e| StoreError::BatchFailed(format!("a blocking task failed: {e}")))?
    }
}

fn alone(store: &Store, ask: &Ask) -> Result<Before, StoreError> {
    store.before_license_write(&ask.reseller, ask.key.as_deref(), ask.renews.as_deref())
}

/// The thread's connection, opened when it has none.
fn connection<'c>(
    store: &Store,
    own: &'c mut Option<DbConn>,
) -> Result<&'c mut DbConn, StoreError> {
    if own.is_none() {
        let mut conn = store.dedicated_connection()?;
        // BACKEND-SPECIFIC: PostgreSQL keeps a generic plan for a prepared
        // statement; SQLite plans each `IN (…)` list as written.
        if let DbConn::Postgres(pg) = &mut conn {
            pg.batch_execute("SET plan_cache_mode = force_custom_plan")?;
        }
        *own = Some(conn);
    }
    own.as_mut()
        .ok_or_else(|| StoreError::BatchFailed("no connection for the licence reads".into()))
}

fn run(store: &Store, receiver: &channel::Receiver<Lookup>) {
    let mut own: Option<DbConn> = None;
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(lookup) => batch.push(lookup),
                Err(_) => break,
            }
        }
        // Nobody waits for these any more.
        batch.retain(|l| !l.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let asks: Vec<&Ask> = batch.iter().map(|l| &l.ask).collect();
        let read = catch_unwind(AssertUnwindSafe(|| {
            Store::before_license_writes(connection(store, &mut own)?, &asks)
        }));
        match read {
            Ok(Ok(answers)) if answers.len() == batch.len() => {
                for (lookup, answer) in batch.into_iter().zip(answers) {
                    let _ = lookup.reply.send(Answer::Read(Box::new(answer)));
                }
            }
            Ok(Err(e)) if !matches!(e, StoreError::Corrupt(_)) => {
                // A new connection next time: this one may be dead.
                own = None;
                tracing::info!(error = %e, reads = batch.len(), "batched licence reads failed");
                let why = format!("reading before the write: {e}");
                for lookup in batch {
                    let _ = lookup.reply.send(Answer::Failed(why.clone()));
                }
            }
            _ => {
                own = None;
                for lookup in batch {
                    let _ = lookup.reply.send(Answer::Alone(lookup.ask));
                }
            }
        }
    }
}
