//! Database faults on PostgreSQL under load, each reconciled against the
//! database afterwards: the server stopped and started again, and a table
//! locked from another session. (Connections terminated in a loop, and the
//! service killed, are in `lifecycle.rs`.)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::Connection;

use crate::helpers::postgres_expected;
use crate::served::{assert_durable, fresh_database, serve, Served};

/// One answer a load client kept: when its request was sent and answered,
/// its status, the licence id of a 201, and whether a 503 said when to retry.
#[derive(Debug, Clone)]
struct Timed {
    sent: DateTime<Utc>,
    took: Duration,
    status: u16,
    licence: Option<String>,
    retry_after: bool,
}

impl Timed {
    fn answered(&self) -> DateTime<Utc> {
        self.sent + chrono::Duration::from_std(self.took).unwrap()
    }
}

/// `clients` clients issuing licences (each with a key of its own) until
/// `until` says stop; after an answer that is not a 201, a client waits
/// `pause` before its next request. Returns every answer.
async fn timed_load(
    served: &Served,
    reseller: &str,
    clients: usize,
    pause: Duration,
    until: &(dyn Fn(&[Timed]) -> bool + Sync),
) -> Vec<Timed> {
    let log = std::sync::Mutex::new(Vec::<Timed>::new());
    let runs = (0..clients).map(|_| {
        let log = &log;
        async move {
            while !until(&log.lock().unwrap()) {
                let sent = Utc::now();
                let started = Instant::now();
                let (status, licence, retry_after) = served.issue_one(reseller).await;
                let answer = Timed {
                    sent,
                    took: started.elapsed(),
                    status,
                    licence,
                    retry_after,
                };
                log.lock().unwrap().push(answer);
                if status != 201 {
                    actix_web::rt::time::sleep(pause).await;
                }
            }
        }
    });
    futures_util::future::join_all(runs).await;
    log.into_inner().unwrap()
}

/// After the faults: every licence a client saw acknowledged is there with
/// its decision, every licence has exactly one allowing event and every
/// allowing event its licence (nothing half-written), and the chain
/// verifies. Returns the times of the allowing events.
fn reconcile(url: &str, log: &[Timed]) -> Vec<DateTime<Utc>> {
    let acknowledged: Vec<String> = log
        .iter()
        .filter(|a| a.status == 201)
        .filter_map(|a| a.licence.clone())
        .collect();
    let store = assert_durable(url, &acknowledged);
    let mut allowed = Vec::new();
    store
        .for_each_event(&Default::default(), |e| {
            if e["action"] == "decision.issue" && e["outcome"] == "allow" {
                let id = e["subject"]["license"]["id"].as_str().unwrap_or_default();
                let at = e["at"].as_str().unwrap().parse().unwrap();
                allowed.push((id.to_string(), at));
            }
            true
        })
        .unwrap();
    let licences = store.licenses(None, None, 1_000_000).unwrap().rows;
    assert_eq!(
        allowed.len(),
        licences.len(),
        "one allowing event per licence, no more, no less"
    );
    for (id, _) in &allowed {
        assert!(
            store.license(id).unwrap().is_some(),
            "an allowing event for licence {id} without the licence"
        );
    }
    let report = store.verify_chain(&[], &[]).unwrap();
    assert!(report.ok, "{report:?}");
    allowed.into_iter().map(|(_, at)| at).collect()
}

/// Whether the load may stop: the fault ended at `over`, and ten licences
/// were acknowledged for requests sent since (or `give_up` seconds passed
/// with fewer, which the test then reports).
fn recovered(log: &[Timed], over: Option<DateTime<Utc>>, give_up: i64) -> bool {
    let Some(over) = over else {
        return false;
    };
    let after = log
        .iter()
        .filter(|a| a.status == 201 && a.sent > over)
        .count();
    after >= 10 || Utc::now() - over > chrono::Duration::seconds(give_up)
}

/// The longest any answer took, asserted under `bound` (the request timeout
/// and some slack for a loaded machine).
fn slowest_within(log: &[Timed], bound: Duration) -> Duration {
    let slowest = log.iter().map(|a| a.took).max().unwrap();
    assert!(
        slowest < bound,
        "every answer within the request timeout and some slack ({bound:?}): the slowest took {slowest:?}"
    );
    slowest
}

/// Statuses other than 201 and 503, and 503s without `Retry-After`.
fn unexpected(log: &[Timed]) -> Vec<&Timed> {
    log.iter()
        .filter(|a| !(a.status == 201 || (a.status == 503 && a.retry_after)))
        .collect()
}

/// A PostgreSQL server of the test's own (initdb in a temporary folder, on
/// a free port), so that it can be stopped without disturbing other tests.
struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl Cluster {
    /// `None` when PostgreSQL's server programs are not installed.
    fn create() -> Option<Cluster> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|v| v.ok().map(|v| v.path().join("bin")))
            .find(|b| b.join("initdb").exists())?;
        let dir = tempfile::tempdir().unwrap();
        let cluster = Cluster {
            bin,
            dir,
            port: crate::served::free_port(),
        };
        // initdb refuses to run as root: the server then runs as `postgres`.
        if cluster.as_root() {
            assert!(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(cluster.dir.path())
                .status()
                .unwrap()
                .success());
        }
        let data = cluster.data();
        let out = cluster
            .run("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {out:?}");
        cluster.start();
        Some(cluster)
    }

    fn as_root(&self) -> bool {
        Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0\n"))
            .unwrap_or(false)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A command for one of the server's programs, run as `postgres` when
    /// the test runs as root.
    fn run(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut c = self.run("pg_ctl");
        c.arg("-D").arg(self.data()).args(args);
        c
    }

    /// Starts the server and waits until it accepts connections.
    fn start_command(&self) -> Command {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.pg_ctl(&["-w", "-o", &options, "-l", &path_text(&log), "start"])
    }

    fn start(&self) {
        let out = self.start_command().output().unwrap();
        assert!(out.status.success(), "pg_ctl start: {out:?}");
    }

    /// A fast shutdown: sessions are ended, and the server is gone when the
    /// command returns.
    fn stop_command(&self) -> Command {
        self.pg_ctl(&["-w", "-m", "fast", "stop"])
    }

    fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-w", "-m", "immediate", "stop"]).output();
    }
}

/// Runs `command` off the test's event loop (which drives the load), and
/// asserts that it succeeded.
async fn run_blocking(mut command: Command) {
    let out = actix_web::rt::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[actix_web::test]
async fn the_database_stopped_for_30_s_issues_nothing_and_the_service_recovers_by_itself() {
    if !postgres_expected() {
        return;
    }
    let Some(cluster) = Cluster::create() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI has PostgreSQL's server programs"
        );
        eprintln!("skipped: no PostgreSQL server programs under /usr/lib/postgresql");
        return;
    };
    let url = cluster.url();
    let mut served = serve(&url, &[("GATEKEEPER_REQUEST_TIMEOUT", "2")]).await;
    let (_, reseller) = served.setup().await;
    let down_for = Duration::from_secs(30);

    // The operator's view: /readyz polled four times a second.
    let ready_log = std::sync::Mutex::new(Vec::<(DateTime<Utc>, u16)>::new());
    let outage = std::sync::Mutex::new(None::<(DateTime<Utc>, DateTime<Utc>)>);
    let done = std::sync::atomic::AtomicBool::new(false);
    let stopper = {
        let outage = &outage;
        let (stop, start) = (cluster.stop_command(), cluster.start_command());
        async move {
            actix_web::rt::time::sleep(Duration::from_secs(3)).await;
            run_blocking(stop).await;
            let stopped = Utc::now();
            actix_web::rt::time::sleep(down_for).await;
            let restarting = Utc::now();
            run_blocking(start).await;
            *outage.lock().unwrap() = Some((stopped, restarting));
        }
    };
    // It goes on after the load has ended until it has seen readiness after
    // the restart turn green, for 20 s at most: the load's ten licences can
    // come within one poll's time (one begun while the database was still
    // starting waits up to 2 s for a connection).
    let poller = async {
        let client = awc::Client::default();
        let mut ended_at = None;
        loop {
            let status = client
                .get(format!("{}/readyz", served.base))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            ready_log.lock().unwrap().push((Utc::now(), status));
            if done.load(std::sync::atomic::Ordering::Relaxed) {
                let ended = *ended_at.get_or_insert_with(Instant::now);
                let restarted = outage.lock().unwrap().map(|(_, r)| r);
                let green = ready_log
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|(at, s)| restarted.is_some_and(|r| *at > r) && *s == 200);
                if green || ended.elapsed() > Duration::from_secs(20) {
                    break;
                }
            }
            actix_web::rt::time::sleep(Duration::from_millis(250)).await;
        }
    };
    // Clients keep issuing until ten licences were acknowledged after the
    // server came back (or 20 s passed with none).
    let until = |log: &[Timed]| recovered(log, outage.lock().unwrap().map(|(_, r)| r), 20);
    let load = async {
        let log = timed_load(&served, &reseller, 6, Duration::from_millis(200), &until).await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        log
    };
    let (log, (), ()) = futures_util::future::join3(load, stopper, poller).await;
    let (stopped, restarting) = outage.lock().unwrap().unwrap();
    let ready_log = ready_log.into_inner().unwrap();

    assert!(
        served.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the service ran through it without a restart"
    );
    assert!(unexpected(&log).is_empty(), "{:?}", unexpected(&log));
    let slowest = slowest_within(&log, Duration::from_millis(4500));
    let while_down: Vec<&Timed> = log
        .iter()
        .filter(|a| a.sent > stopped && a.answered() < restarting)
        .collect();
    assert!(
        while_down.len() > 50,
        "the load went on during the outage ({})",
        while_down.len()
    );
    assert!(
        while_down.iter().all(|a| a.status == 503),
        "zero licences while the database was down"
    );
    let before = log
        .iter()
        .filter(|a| a.status == 201 && a.answered() < stopped)
        .count();
    let recovered: Vec<&Timed> = log
        .iter()
        .filter(|a| a.status == 201 && a.sent > restarting)
        .collect();
    assert!(before > 0, "the load ran before the stop");
    assert!(recovered.len() >= 10, "the service recovered by itself");

    // Readiness: green, red while down, green again.
    let red = ready_log
        .iter()
        .filter(|(at, s)| *at > stopped && *at < restarting && *s == 503)
        .count();
    assert!(red > 0, "readiness turned red: {ready_log:?}");
    assert!(ready_log
        .iter()
        .filter(|(at, _)| *at > stopped + chrono::Duration::seconds(10) && *at < restarting)
        .all(|(_, s)| *s == 503));
    let green_again = ready_log
        .iter()
        .find(|(at, s)| *at > restarting && *s == 200)
        .map(|(at, _)| *at)
        .expect("readiness turned green again");

    // The database agrees: every acknowledged licence is there, nothing is
    // half-written, and nothing was issued while the server was down.
    let issued_at = reconcile(&url, &log);
    assert!(
        issued_at.iter().all(|at| *at < stopped || *at > restarting),
        "no licence issued while the database was down"
    );
    let first_licence_after = recovered.iter().map(|a| a.answered()).min().unwrap();
    eprintln!(
        "database stopped for {}s under load: {} answers ({} 201 before, {} 503 during, {} 201 after; slowest {} ms), readiness green again {} ms and first licence {} ms after `pg_ctl start` began; {} licences reconciled",
        down_for.as_secs(),
        log.len(),
        before,
        while_down.len(),
        log.iter().filter(|a| a.status == 201 && a.sent > restarting).count(),
        slowest.as_millis(),
        (green_again - restarting).num_milliseconds(),
        (first_licence_after - restarting).num_milliseconds(),
        issued_at.len()
    );
}

#[actix_web::test]
async fn a_table_locked_elsewhere_times_requests_out_in_bounded_time_and_half_writes_nothing() {
    if !postgres_expected() {
        return;
    }
    let (_db, url) = fresh_database();
    let timeout = Duration::from_secs(2);
    let served = serve(&url, &[("GATEKEEPER_REQUEST_TIMEOUT", "2")]).await;
    let (_, reseller) = served.setup().await;
    let held_for = Duration::from_secs(8);

    // Another session locks the licences and the audit trail for 8 s.
    let window = std::sync::Mutex::new(None::<(DateTime<Utc>, DateTime<Utc>)>);
    let locker = {
        let url = url.clone();
        let window = &window;
        async move {
            actix_web::rt::time::sleep(Duration::from_secs(1)).await;
            let (locked, released) = actix_web::rt::task::spawn_blocking(move || {
                let mut conn = diesel::pg::PgConnection::establish(&url).unwrap();
                use diesel::connection::SimpleConnection;
                // Taking two locks while the service writes may deadlock
                // with it; PostgreSQL then fails one side, here or there.
                while let Err(e) = conn.batch_execute(
                    "BEGIN; LOCK TABLE licenses, audit_events IN ACCESS EXCLUSIVE MODE",
                ) {
                    eprintln!("taking the locks again: {e}");
                    conn.batch_execute("ROLLBACK").unwrap();
                }
                let locked = Utc::now();
                std::thread::sleep(held_for);
                let released = Utc::now();
                conn.batch_execute("COMMIT").unwrap();
                (locked, released)
            })
            .await
            .unwrap();
            *window.lock().unwrap() = Some((locked, released));
        }
    };
    let until = |log: &[Timed]| recovered(log, window.lock().unwrap().map(|(_, r)| r), 15);
    let (log, ()) = futures_util::future::join(
        timed_load(&served, &reseller, 6, Duration::from_millis(100), &until),
        locker,
    )
    .await;
    let (locked, released) = window.lock().unwrap().unwrap();

    assert!(unexpected(&log).is_empty(), "{:?}", unexpected(&log));
    // Without the bound, requests would wait for the lock: 8 s.
    let slowest = slowest_within(&log, timeout + Duration::from_millis(2500));
    let during: Vec<&Timed> = log
        .iter()
        .filter(|a| a.sent > locked && a.answered() < released)
        .collect();
    assert!(
        during.len() > 3 && during.iter().all(|a| a.status == 503),
        "requests during the lock time out with 503: {during:?}"
    );
    let after = log
        .iter()
        .filter(|a| a.status == 201 && a.sent > released)
        .count();
    assert!(
        after >= 10,
        "licences are issued again once the lock is gone"
    );

    // A write that ran just before the lock went away may have waited for
    // it and then committed: only the lock's earlier part is checked.
    let issued_at = reconcile(&url, &log);
    let settled = released - chrono::Duration::milliseconds(1500);
    assert!(
        issued_at.iter().all(|at| *at < locked || *at > settled),
        "nothing was written behind the lock"
    );
    eprintln!(
        "table locked for {}s under load: {} answers, {} 503 during the lock, slowest answer {} ms (request timeout {} ms); {} licences reconciled",
        held_for.as_secs(),
        log.len(),
        during.len(),
        slowest.as_millis(),
        timeout.as_millis(),
        issued_at.len()
    );
}
