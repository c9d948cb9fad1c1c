//! The ledger writer on PostgreSQL: batches prepared against a predicted
//! head and sent as one statement each, the next prepared while the one
//! before it commits.
//!
//! The writer keeps the head its batches leave in memory. It hands a
//! batch's rows to one of its committers, each a thread with a connection
//! of its own, which sends them with the head check as one statement
//! ([`crate::store::commit`]). At most `depth` batches are out at once; the
//! service runs one ([`super::SERVICE_DEPTH`] says why). While they commit,
//! every write that arrives is run at once into the *next* batch, against
//! the head the batches out will leave (reads on the writer's own
//! connection, in autocommit), up to `max_batch` writes; when there is room
//! out, the next batch is sent with whatever else is queued by then. So the
//! writer's work (the events, their hashes, a licence's signature) is done
//! while the database works, not between its batches. Callers are
//! answered in the order their batches were sent, each once its batch has
//! committed (and after the next batch has gone).
//!
//! A batch that does not commit (the database refused it, another replica
//! moved the head, the connection was lost) takes every batch sent after it
//! with it: they were prepared on its head, so their head check fails and
//! they write nothing. The writer then waits for each of them and runs
//! them again, in order, under the locked head as [`super::run_locked`]
//! does, which reads the head afresh; and it runs the next batch's writes
//! again on the head as it then stands, so that batch is never sent on the
//! one predicted. So does a batch with a write that needs the lock itself
//! ([`Head::immediate`]: catalogue changes, reviews, impact runs, webhook
//! endpoints), after the batches before it have landed. A batch whose
//! statement went unanswered (the connection died) may be in the database.
//! Once its backend is gone (terminated, say) the committer asks whether
//! the chain holds the batch's last event: then it committed; if not, it
//! never will, and it is run again like a refused one. While the backend
//! lives on, or when the database cannot be asked, it is not run again and
//! its callers are told the outcome is unknown, unless it moved the head on
//! and a batch sent after it committed, which proves it did (the later
//! batch's head check found the head it left). A batch that appends
//! nothing to the chain proves nothing of the batch before it: the head
//! check cannot tell whether that one committed, so each is judged on its
//! own outcome.

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel as channel;
use diesel::connection::SimpleConnection;
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Integer, Text};

use super::{connection_lost, purge_now_and_then, run_locked, spent, Failure, Job};
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
    outcome: Option<channel::Receiver<Landed>>,
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
            Some(outcome) => outcome.recv().unwrap_or_else(|_| stopped()),
        }
    }
}

type Task = (Advance, Pending, channel::Sender<Landed>);

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

    fn send(&self, advance: Advance, rows: Pending) -> channel::Receiver<Landed> {
        let (reply, outcome) = channel::bounded(1);
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

/// The versions this writer's committed batches left licences at (licence
/// id to `updated_at`), which the batch being prepared shares (see
/// [`Head::license_as_read`]). Versions that land while that batch holds
/// the map wait in `later` until it has been sent, so the map is never
/// copied: that batch reads those licences as carried anyway.
#[derive(Default)]
struct Written {
    map: Arc<HashMap<String, String>>,
    later: Vec<(String, String)>,
}

impl Written {
    /// The map for the next batch, with every version noted so far.
    fn share(&mut self) -> Arc<HashMap<String, String>> {
        if let Some(map) = Arc::get_mut(&mut self.map) {
            for (id, version) in self.later.drain(..) {
                if map.len() >= REMEMBERED {
                    map.clear();
                }
                map.insert(id, version);
            }
        }
        Arc::clone(&self.map)
    }

    fn note(&mut self, row: &LicenseRow) {
        if let Some(version) = &row.version {
            if self.later.len() >= REMEMBERED {
                self.later.clear();
            }
            self.later.push((row.id.clone(), version.clone()));
        }
    }

    /// After a batch that did not commit: what runs again under the lock
    /// writes versions the writer does not keep.
    fn forget(&mut self) {
        self.map = Arc::default();
        self.later.clear();
    }
}

/// The writer's state between batches.
struct Writer<'a> {
    store: &'a Store,
    /// Told how many writes each batch holds.
    batch_sizes: &'a dyn Fn(usize),
    /// Per batch out: one committer for batches that change no licence,
    /// one (planning each time) for those that do.
    committers: Vec<Committer>,
    depth: usize,
    turn: usize,
    /// The writer's connection: reads while preparing, batches under the
    /// lock.
    own: Option<DbConn>,
    /// The head the batches out leave if they commit; `None` when it must
    /// be read (nothing is out).
    predicted: Option<Predicted>,
    flights: VecDeque<Flight>,
    written: Written,
    /// The next batch's writes, each run on `head` as it arrived.
    next: Vec<Job>,
    /// The head the next batch runs on, and the one it started from.
    head: Option<(Head, Predicted)>,
    /// Writes of batches that committed, answered once the next batch is
    /// on its way.
    answer: Vec<Job>,
    /// Writes dropped since the last batch went, their callers gone.
    dropped: usize,
}

impl Writer<'_> {
    /// Runs `job` into the next batch, on the head the batches out leave.
    /// If it cannot run there (it needs the locked head, or a read failed),
    /// the batches out land and the next batch runs under the lock.
    fn add(&mut self, job: Job) {
        if job.abandoned() {
            self.dropped += 1;
            return;
        }
        self.next.push(job);
        let Writer {
            store,
            own,
            predicted,
            flights,
            written,
            next,
            head,
            ..
        } = self;
        let ran = catch_unwind(AssertUnwindSafe(|| {
            let conn = match own.as_mut() {
                Some(conn) => conn,
                None => own.insert(store.dedicated_connection()?),
            };
            let (head, _) = match head {
                Some(open) => open,
                None => {
                    // Only with nothing out: the head as committed.
                    let from = match predicted {
                        Some(p) => p.clone(),
                        None => read_head(conn)?,
                    };
                    let carried = flights.iter().flat_map(|f| f.changed.clone()).collect();
                    let opened = Head::predicted(
                        from.seq,
                        from.hash.clone(),
                        from.catalog_version,
                        from.next_status_idx,
                        carried,
                        written.share(),
                    );
                    head.insert((opened, from))
                }
            };
            if let Some(job) = next.last_mut() {
                job.run(conn, head)?;
            }
            Ok::<_, StoreError>(!head.needs_lock())
        }));
        match ran {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => self.run_next_locked(),
            Ok(Err(e)) => {
                tracing::info!(error = %e, "could not prepare a ledger batch; running it under the lock");
                self.own = None;
                self.run_next_locked();
            }
            Err(_) => {
                self.own = None;
                self.run_next_locked();
            }
        }
    }

    /// Runs the next batch under the locked head, once every batch out has
    /// landed.
    fn run_next_locked(&mut self) {
        while !self.flights.is_empty() {
            land_oldest(
                self.store,
                &mut self.own,
                &mut self.flights,
                &mut self.written,
                &mut self.answer,
                None,
            );
        }
        self.answer_landed();
        self.predicted = None;
        self.head = None;
        let mut jobs = std::mem::take(&mut self.next);
        self.count(jobs.len());
        let failure = run_locked(self.store, &mut self.own, &mut jobs, Instant::now());
        for job in jobs {
            job.settle(failure.as_ref());
        }
    }

    /// Sends the next batch (or, with nothing to write, keeps it in line
    /// as landed).
    fn launch(&mut self) {
        let jobs = std::mem::take(&mut self.next);
        let Some((head, from)) = self.head.take() else {
            return;
        };
        self.count(jobs.len());
        let advance = Advance {
            from_seq: from.seq,
            from_hash: from.hash,
            to_seq: head.seq,
            to_hash: head.hash.clone(),
            catalog_version: head.catalog_version,
        };
        let (rows, next_status_idx) = head.into_rows();
        self.predicted = Some(Predicted {
            seq: advance.to_seq,
            hash: advance.to_hash.clone(),
            catalog_version: advance.catalog_version,
            next_status_idx,
        });
        let advances = advance.to_seq != advance.from_seq || advance.to_hash != advance.from_hash;
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
            self.turn = (self.turn + 1) % self.depth;
            let kind = usize::from(!rows.renewals.is_empty());
            self.committers
                .get(self.turn * 2 + kind)
                .map(|c| c.send(advance, rows))
        };
        self.flights.push_back(Flight {
            jobs,
            sent_at: Instant::now(),
            outcome,
            changed,
            advances,
        });
    }

    /// Lands the oldest batch out (`landed`: how, if already heard). If it
    /// did not commit, every batch out has landed with it and the next
    /// batch, prepared on its head, is prepared again.
    fn land_oldest(&mut self, landed: Option<Landed>) {
        let stood = land_oldest(
            self.store,
            &mut self.own,
            &mut self.flights,
            &mut self.written,
            &mut self.answer,
            landed,
        );
        if !stood {
            self.answer_landed();
            self.predicted = None;
            self.head = None;
            for job in std::mem::take(&mut self.next) {
                self.add(job);
            }
        }
    }

    /// Counts a batch of `n` writes (and logs the writes dropped before it).
    fn count(&mut self, n: usize) {
        (self.batch_sizes)(n);
        if self.dropped > 0 {
            tracing::warn!(
                dropped = self.dropped,
                "dropped writes whose callers stopped waiting"
            );
            self.dropped = 0;
        }
    }

    fn answer_landed(&mut self) {
        for job in self.answer.drain(..) {
            job.settle(None);
        }
    }
}

/// The writer's loop. Up to `depth` batches are out at once, each sent by
/// a committer of its own; while they commit, the writes that arrive are
/// run into the next batch, which is sent as soon as there is room, with
/// whatever else is queued by then (up to `max_batch` writes).
pub(super) fn run(
    store: &Store,
    receiver: &channel::Receiver<Job>,
    max_batch: usize,
    depth: usize,
    batch_sizes: &dyn Fn(usize),
) {
    let depth = depth.max(1);
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
    let mut w = Writer {
        store,
        batch_sizes,
        committers,
        depth,
        turn: 0,
        own: None,
        predicted: None,
        flights: VecDeque::new(),
        written: Written::default(),
        next: Vec::new(),
        head: None,
        answer: Vec::new(),
        dropped: 0,
    };
    let mut purged = Instant::now();
    // No more writes will come (the ledger was dropped): what is out and
    // prepared still lands.
    let mut closed = false;
    loop {
        if w.flights.len() < depth {
            // Room out: the next batch goes, with what is queued by now.
            if w.next.is_empty() && w.flights.is_empty() {
                w.answer_landed();
                match receiver.recv() {
                    Ok(job) => w.add(job),
                    Err(_) => break,
                }
            }
            while w.next.len() < max_batch {
                match receiver.try_recv() {
                    Ok(job) => w.add(job),
                    Err(_) => break,
                }
            }
            let launching = !w.next.is_empty();
            if launching {
                w.launch();
            }
            w.answer_landed();
            purge_now_and_then(store, &mut purged);
            if launching || w.flights.is_empty() {
                continue;
            }
        }
        // No room out, or nothing to send: until the oldest batch lands,
        // prepare the next one from the writes that arrive.
        let Some(outcome) = w.flights.front().map(|f| f.outcome.clone()) else {
            continue;
        };
        match outcome {
            // A landing first, if both are there (`select!` picks at random).
            Some(outcome) if !outcome.is_empty() => {
                w.land_oldest(Some(outcome.recv().unwrap_or_else(|_| stopped())));
            }
            Some(outcome) if !closed && w.next.len() < max_batch => {
                channel::select! {
                    recv(receiver) -> job => match job {
                        Ok(job) => w.add(job),
                        Err(_) => closed = true,
                    },
                    recv(outcome) -> landed => w.land_oldest(Some(landed.unwrap_or_else(|_| stopped()))),
                }
            }
            _ => w.land_oldest(None),
        }
    }
}

/// How a batch lands whose committer stopped before answering.
fn stopped() -> Landed {
    Landed::Failed(Failure {
        why: "the ledger's committer stopped".into(),
        unknown: true,
    })
}

/// Lands the oldest batch out (`landed`: its outcome, if already heard)
/// and keeps its writes in `answer` if it stands. If it did not commit,
/// lands every batch after it too, answers their writes, and runs again
/// under the lock each that did not commit (see the module's
/// documentation); then returns false.
fn land_oldest(
    store: &Store,
    own: &mut Option<DbConn>,
    flights: &mut VecDeque<Flight>,
    written: &mut Written,
    answer: &mut Vec<Job>,
    landed: Option<Landed>,
) -> bool {
    let Some(mut first) = flights.pop_front() else {
        return true;
    };
    let landed = landed.unwrap_or_else(|| first.land());
    if matches!(landed, Landed::Committed | Landed::Nothing) {
        for row in &first.changed {
            written.note(row);
        }
        answer.append(&mut first.jobs);
        return true;
    }
    // Every batch out was prepared on this one's head.
    written.forget();
    for job in answer.drain(..) {
        job.settle(None);
    }
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
    false
}
