//! Webhook delivery, end to end: a real receiver in the test process (an
//! HTTP server on 127.0.0.1) verifies every delivery with the
//! `standardwebhooks` crate, an independent implementation of the scheme,
//! records it, and answers as its script says.
//!
//! The endpoints are made through `POST /v1/webhook-endpoints` before the
//! events they are to receive (an endpoint receives what comes after it).

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use gatekeeper::store::events::{EventFilter, EventRow};
use serde_json::{json, Value};

use crate::helpers::{sample, Backend, TestApp, TestDb};

/// How the receiver answers one delivery.
#[derive(Clone, Debug)]
pub enum Answer {
    Status(u16),
    /// This status with `Retry-After: <seconds>`.
    RetryAfter(u16, u64),
    /// This status with `Retry-After` an HTTP date this far ahead.
    RetryAt(u16, Duration),
    /// `200`, after this long (past the delivery's time-out).
    Sleep(Duration),
    /// `302` to this URL.
    Redirect(String),
}

/// One delivery as received.
#[derive(Clone, Debug)]
pub struct Got {
    pub id: String,
    pub event_type: String,
    pub body: Value,
    pub at: Instant,
    /// Whether each of the receiver's secrets verifies it.
    pub verified_by: Vec<bool>,
    /// Signatures in `webhook-signature`.
    pub signatures: usize,
}

struct Script {
    answers: VecDeque<Answer>,
    default: Answer,
    secrets: Vec<String>,
    got: Vec<Got>,
}

type Shared = Arc<Mutex<Script>>;

/// A webhook receiver on 127.0.0.1, stopped and started again on the same
/// port by [`Receiver::down`] and [`Receiver::up`].
pub struct Receiver {
    pub url: String,
    address: SocketAddr,
    script: Shared,
    server: Option<actix_web::dev::ServerHandle>,
}

async fn receive(req: HttpRequest, body: web::Bytes, script: web::Data<Shared>) -> HttpResponse {
    let mut headers = http::HeaderMap::new();
    for (name, value) in req.headers() {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_str().as_bytes()),
            http::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            headers.append(name, value);
        }
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let answer = {
        let mut script = script.lock().unwrap();
        let verified_by = script
            .secrets
            .iter()
            .map(|s| {
                standardwebhooks::Webhook::new(s)
                    .unwrap()
                    .verify(&body, &headers)
                    .is_ok()
            })
            .collect();
        script.got.push(Got {
            id: header("webhook-id"),
            event_type: parsed["type"].as_str().unwrap_or_default().to_string(),
            body: parsed,
            at: Instant::now(),
            verified_by,
            signatures: header("webhook-signature").split(' ').count(),
        });
        let default = script.default.clone();
        script.answers.pop_front().unwrap_or(default)
    };
    let status = |code: u16| actix_web::http::StatusCode::from_u16(code).unwrap();
    match answer {
        Answer::Status(code) => HttpResponse::build(status(code)).finish(),
        Answer::RetryAfter(code, seconds) => HttpResponse::build(status(code))
            .insert_header(("retry-after", seconds.to_string()))
            .finish(),
        Answer::RetryAt(code, ahead) => HttpResponse::build(status(code))
            .insert_header((
                "retry-after",
                httpdate::fmt_http_date(std::time::SystemTime::now() + ahead),
            ))
            .finish(),
        Answer::Sleep(long) => {
            actix_web::rt::time::sleep(long).await;
            HttpResponse::Ok().finish()
        }
        Answer::Redirect(to) => HttpResponse::Found()
            .insert_header(("location", to))
            .finish(),
    }
}

fn bind(address: SocketAddr, script: &Shared) -> (SocketAddr, actix_web::dev::ServerHandle) {
    let data = web::Data::new(Arc::clone(script));
    let listener = std::net::TcpListener::bind(address).unwrap();
    let address = listener.local_addr().unwrap();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
            .default_service(web::to(receive))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(0)
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    (address, handle)
}

impl Receiver {
    /// A receiver that answers `default` (and verifies with the secrets it
    /// is given to [`Receiver::trust`]).
    pub async fn start(default: Answer) -> Receiver {
        let script = Arc::new(Mutex::new(Script {
            answers: VecDeque::new(),
            default,
            secrets: Vec::new(),
            got: Vec::new(),
        }));
        let (address, handle) = bind("127.0.0.1:0".parse().unwrap(), &script);
        Receiver {
            url: format!("http://{address}/hooks"),
            address,
            script,
            server: Some(handle),
        }
    }

    /// The secrets each delivery is verified with, each on its own.
    pub fn trust(&self, secrets: &[&str]) {
        self.script.lock().unwrap().secrets = secrets.iter().map(|s| s.to_string()).collect();
    }

    /// The next answers, before the default.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.script.lock().unwrap().answers.extend(answers);
    }

    pub fn answer(&self, default: Answer) {
        self.script.lock().unwrap().default = default;
    }

    /// The secrets it verifies with.
    pub fn secrets(&self) -> Vec<String> {
        self.script.lock().unwrap().secrets.clone()
    }

    pub fn got(&self) -> Vec<Got> {
        self.script.lock().unwrap().got.clone()
    }

    /// Stops listening: connections are refused.
    pub async fn down(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop(false).await;
        }
    }

    /// Listens again on the same port.
    pub async fn up(&mut self) {
        let (_, handle) = bind(self.address, &self.script);
        self.server = Some(handle);
    }

    /// Waits until `done` holds for what was received, at most `within`.
    pub async fn wait(&self, what: &str, within: Duration, done: impl Fn(&[Got]) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            let got = self.got();
            if done(&got) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}; received {:?}",
                got.iter()
                    .map(|g| (&g.id, &g.event_type, &g.verified_by))
                    .collect::<Vec<_>>()
            );
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The ids received, each once, in the order of their first arrival.
pub fn dedup(got: &[Got]) -> Vec<String> {
    let mut seen = HashSet::new();
    got.iter()
        .filter(|g| seen.insert(g.id.clone()))
        .map(|g| g.id.clone())
        .collect()
}

/// Creates an endpoint for `receiver` through the API as `token` (every
/// event type) and has the receiver verify with its secret; its id. It
/// receives the events made after it.
pub async fn subscribe(app: &TestApp, token: &str, receiver: &Receiver) -> String {
    let r = app
        .post("/v1/webhook-endpoints", token, json!({"url": receiver.url}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    receiver.trust(&[r.body["secret"].as_str().unwrap()]);
    r.body["id"].as_str().unwrap().to_string()
}

/// The outbox as stored: a tenant's events (every event for `None`).
pub fn outbox(url: &gatekeeper::config::DatabaseUrl, reseller: Option<&str>) -> Vec<EventRow> {
    let store = gatekeeper::store::Store::connect(url, 1).unwrap();
    let filter = EventFilter {
        after: 0,
        reseller: reseller.map(String::from),
        types: None,
    };
    let page = store.events(&filter, 100_000).unwrap();
    assert!(page.next.is_none() && page.unreadable == 0);
    page.rows
}

fn ids(events: &[EventRow]) -> Vec<String> {
    events.iter().map(|e| e.id.clone()).collect()
}

/// Every delivery verified, and each body the event it names.
#[track_caller]
fn assert_verified_and_faithful(got: &[Got], events: &[EventRow]) {
    for g in got {
        assert!(
            !g.verified_by.is_empty() && g.verified_by.iter().all(|v| *v),
            "a delivery that does not verify: {g:?}"
        );
        let event = events
            .iter()
            .find(|e| e.id == g.id)
            .unwrap_or_else(|| panic!("a delivery of no event: {g:?}"));
        assert_eq!(
            g.body,
            json!({"type": event.event_type, "timestamp": event.created_at, "data": event.data}),
        );
    }
}

/// The service's `/metrics` sample for a delivery result.
async fn delivered_as(app: &TestApp, result: &str) -> f64 {
    let text = app.send("GET", "/metrics", None, None).await.text;
    sample(
        &text,
        &format!("gatekeeper_webhook_deliveries_total{{result=\"{result}\"}}"),
    )
    .unwrap_or(0.0)
}

/// Polls `f` until it holds, at most `within`.
async fn until<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

fn us(n: usize) -> Value {
    json!({"id": format!("c-{n}"), "name": "Initech", "country": "US"})
}

/// Issues a licence for `reseller` (the products of `impact::vendors`).
async fn issue(app: &TestApp, reseller: &str, n: usize) {
    let body = json!({"product": "SCY-AV", "customer": us(n), "seats": 1, "term_days": 30});
    let key = uuid::Uuid::new_v4().to_string();
    let reply = crate::licenses::issue(app, reseller, Some(&key), &body).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
}

const WITHIN: Duration = Duration::from_secs(60);

/// Every event type the service makes reaches a compliance (all-tenant)
/// endpoint, verified; a tenant's endpoint receives its tenant's events
/// only, in order.
async fn every_event_type_arrives_verified(app: TestApp) {
    crate::impact::vendors(&app).await;
    let all = Receiver::start(Answer::Status(200)).await;
    let alpha = Receiver::start(Answer::Status(204)).await;
    subscribe(&app, &app.compliance(), &all).await;
    subscribe(&app, &app.reseller("alpha"), &alpha).await;
    crate::events::every_kind(&app).await;

    // Each event once, in `seq` order, whatever the service still adds.
    let url = app.config.database_url.clone();
    all.wait("every event at the compliance endpoint", WITHIN, |got| {
        dedup(got) == ids(&outbox(&url, None))
    })
    .await;
    alpha
        .wait("alpha's events at alpha's endpoint", WITHIN, |got| {
            dedup(got) == ids(&outbox(&url, Some("alpha")))
        })
        .await;
    let events = outbox(&url, None);
    let got = all.got();
    assert_verified_and_faithful(&got, &events);
    assert_eq!(dedup(&got), ids(&events)[..dedup(&got).len()]);
    assert_eq!(got.len(), dedup(&got).len(), "a delivery was repeated");
    let types: HashSet<&str> = got.iter().map(|g| g.event_type.as_str()).collect();
    for kind in gatekeeper::audit::outbox::EVENT_TYPES {
        assert!(types.contains(kind), "no {kind} delivered: {types:?}");
    }
    assert!(events.iter().any(|e| e.reseller.as_deref() == Some("beta")));

    let alpha_events = outbox(&url, Some("alpha"));
    let got = alpha.got();
    assert_verified_and_faithful(&got, &alpha_events);
    assert_eq!(
        dedup(&got),
        ids(&alpha_events)[..dedup(&got).len()],
        "only alpha's, in order"
    );
    assert!(got.iter().all(|g| g.event_type != "impact.completed"));

    assert!(delivered_as(&app, "delivered").await >= (events.len() + alpha_events.len()) as f64);
}
crate::both!(every_event_type_arrives_verified);

/// A receiver that fails (500s, a time-out, then connections refused) for
/// a while, then comes back: every event arrives, in order, each id once
/// after deduplication.
async fn a_receiver_down_for_a_while_gets_everything_in_order(app: TestApp) {
    crate::impact::vendors(&app).await;
    let mut receiver = Receiver::start(Answer::Status(200)).await;
    // Past the test configuration's 2 s time-out.
    receiver.script([
        Answer::Status(500),
        Answer::Status(500),
        Answer::Sleep(Duration::from_secs(4)),
        Answer::Status(502),
    ]);
    subscribe(&app, &app.reseller("alpha"), &receiver).await;
    for n in 0..3 {
        issue(&app, "alpha", n).await;
    }
    issue(&app, "beta", 99).await;
    receiver
        .wait("the scripted failures, then a success", WITHIN, |got| {
            got.len() >= 5
        })
        .await;

    // Down: connections refused, while more events are made.
    receiver.down().await;
    for n in 3..6 {
        issue(&app, "alpha", n).await;
    }
    until("an unreachable attempt", WITHIN, || async {
        delivered_as(&app, "unreachable").await >= 1.0
    })
    .await;
    receiver.up().await;

    let url = app.config.database_url.clone();
    receiver
        .wait("every alpha event", WITHIN, |got| {
            let have: HashSet<String> = dedup(got).into_iter().collect();
            let events = outbox(&url, Some("alpha"));
            events.len() == 6 && events.iter().all(|e| have.contains(&e.id))
        })
        .await;
    let events = outbox(&url, Some("alpha"));
    let got = receiver.got();
    assert_verified_and_faithful(&got, &events);
    assert_eq!(dedup(&got), ids(&events), "in seq order, each once");
    // The first event came four times (two 500s, the time-out, the 502)
    // before its success: the time-out's was received, then retried.
    assert_eq!(got[..5].iter().filter(|g| g.id == events[0].id).count(), 5);
    assert!(delivered_as(&app, "failed").await >= 3.0);
    assert!(delivered_as(&app, "timeout").await >= 1.0);
    assert_eq!(delivered_as(&app, "delivered").await, 6.0);
}
crate::both!(a_receiver_down_for_a_while_gets_everything_in_order);

/// An endpoint that answers `410` is disabled, with a `webhook.disable`
/// audit event by the system, and the trail still verifies.
async fn gone_disables_the_endpoint(app: TestApp) {
    crate::impact::vendors(&app).await;
    let gone = Receiver::start(Answer::Status(410)).await;
    let all = Receiver::start(Answer::Status(200)).await;
    let gone_id = subscribe(&app, &app.reseller("alpha"), &gone).await;
    subscribe(&app, &app.compliance(), &all).await;
    issue(&app, "alpha", 1).await;

    let compliance = app.compliance();
    let deadline = Instant::now() + WITHIN;
    let disabled = loop {
        let page = app
            .get("/v1/audit?action=webhook.disable", &compliance)
            .await;
        assert_eq!(page.status, 200, "{}", page.text);
        if let Some(event) = page.body["events"].get(0) {
            break event.clone();
        }
        assert!(Instant::now() < deadline, "no webhook.disable audit event");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(disabled["actor"]["role"], "system", "{disabled}");
    let subject = &disabled["subject"];
    assert_eq!(subject["kind"], "webhook_endpoint");
    assert_eq!(subject["id"], gone_id.as_str());
    assert_eq!(subject["reseller"], "alpha");
    assert!(subject["disabled_at"].is_string(), "{subject}");
    assert!(subject["disabled_reason"].is_string(), "{subject}");

    // Disabled: a later event goes to the other endpoint only.
    issue(&app, "alpha", 2).await;
    let url = app.config.database_url.clone();
    all.wait("both events elsewhere", WITHIN, |got| {
        dedup(got).len() == outbox(&url, None).len() && got.len() >= 2
    })
    .await;
    // Two of the worker's ticks more, for a delivery there would have been.
    actix_web::rt::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(gone.got().len(), 1, "a disabled endpoint was called again");
    assert_eq!(delivered_as(&app, "gone").await, 1.0);

    let verify = app.get("/v1/audit/verify", &compliance).await;
    assert_eq!(verify.body["ok"], true, "{}", verify.text);
    until("the disabled endpoints gauge", WITHIN, || async {
        let text = app.send("GET", "/metrics", None, None).await.text;
        sample(&text, "gatekeeper_webhook_endpoints_disabled") == Some(1.0)
    })
    .await;
}
crate::both!(gone_disables_the_endpoint);

/// A `302` is a failure like any other: never followed, retried.
async fn a_redirect_is_not_followed(app: TestApp) {
    crate::impact::vendors(&app).await;
    let elsewhere = Receiver::start(Answer::Status(200)).await;
    let receiver = Receiver::start(Answer::Status(200)).await;
    receiver.script([
        Answer::Redirect(elsewhere.url.clone()),
        Answer::Redirect(elsewhere.url.clone()),
    ]);
    subscribe(&app, &app.reseller("alpha"), &receiver).await;
    issue(&app, "alpha", 1).await;
    receiver
        .wait("two redirects, then the delivery", WITHIN, |got| {
            got.len() >= 3
        })
        .await;
    let got = receiver.got();
    assert_eq!(dedup(&got).len(), 1);
    assert!(elsewhere.got().is_empty(), "a redirect was followed");
    assert!(delivered_as(&app, "failed").await >= 2.0);
    assert_eq!(delivered_as(&app, "delivered").await, 1.0);
}
crate::both!(a_redirect_is_not_followed);

/// During a rotation's overlap a delivery carries a signature by each
/// secret, each verifying with its own; after it, the new secret's only.
async fn a_rotation_signs_with_both_secrets(app: TestApp) {
    crate::impact::vendors(&app).await;
    let alpha = app.reseller("alpha");
    let rotating = Receiver::start(Answer::Status(200)).await;
    let rotated = Receiver::start(Answer::Status(200)).await;
    let mut secrets = Vec::new();
    for receiver in [&rotating, &rotated] {
        let id = subscribe(&app, &alpha, receiver).await;
        let old = receiver.secrets();
        let r = app
            .post(
                &format!("/v1/webhook-endpoints/{id}/rotation"),
                &alpha,
                json!({}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let new = r.body["secret"].as_str().unwrap().to_string();
        receiver.trust(&[&new, &old[0]]);
        secrets.push((id, new, old[0].clone()));
    }
    // The second endpoint's overlap is made to have ended (behind the
    // service's back: a day is long to wait in a test).
    let ended =
        gatekeeper::store::format_instant(chrono::Utc::now() - chrono::Duration::seconds(1));
    app.db
        .execute(&format!(
            "UPDATE webhook_endpoints SET previous_until = '{ended}' WHERE id = '{}'",
            secrets[1].0
        ))
        .unwrap();
    issue(&app, "alpha", 1).await;
    rotating
        .wait("a delivery", WITHIN, |got| !got.is_empty())
        .await;
    rotated
        .wait("a delivery", WITHIN, |got| !got.is_empty())
        .await;
    for g in rotating.got() {
        assert_eq!(g.signatures, 2, "{g:?}");
        assert_eq!(g.verified_by, vec![true, true], "each secret verifies");
    }
    for g in rotated.got() {
        assert_eq!(g.signatures, 1, "{g:?}");
        assert_eq!(
            g.verified_by,
            vec![true, false],
            "the expired one signs no more"
        );
    }
}
crate::both!(a_rotation_signs_with_both_secrets);

/// `Retry-After` (seconds, or an HTTP date) holds the next attempt back.
async fn retry_after_is_honoured(app: TestApp) {
    crate::impact::vendors(&app).await;
    let receiver = Receiver::start(Answer::Status(200)).await;
    receiver.script([
        Answer::RetryAfter(503, 2),
        Answer::RetryAt(429, Duration::from_secs(3)),
    ]);
    subscribe(&app, &app.reseller("alpha"), &receiver).await;
    issue(&app, "alpha", 1).await;
    receiver
        .wait("two refusals, then the delivery", WITHIN, |got| {
            got.len() >= 3
        })
        .await;
    let got = receiver.got();
    let gaps: Vec<Duration> = got.windows(2).map(|w| w[1].at - w[0].at).collect();
    // Without `Retry-After` the test configuration retries within ~1 s
    // (200 ms back-off, a 1 s tick).
    assert!(gaps[0] >= Duration::from_millis(1900), "{gaps:?}");
    // An HTTP date has whole seconds: 3 s ahead is at least 2 s ahead.
    assert!(gaps[1] >= Duration::from_millis(1900), "{gaps:?}");
    assert!(
        gaps.iter().all(|g| *g < Duration::from_secs(20)),
        "{gaps:?}"
    );
}
crate::both!(retry_after_is_honoured);

#[derive(diesel::QueryableByName, Debug, PartialEq)]
struct Delivery {
    #[diesel(sql_type = diesel::sql_types::Text)]
    endpoint_id: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    event_seq: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    event_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    outcome: String,
}

/// Every row of `webhook_deliveries`, in `seq` order.
fn deliveries(db: &TestDb) -> Vec<Delivery> {
    db.load(
        "SELECT endpoint_id, event_seq, event_id, outcome FROM webhook_deliveries \
         ORDER BY endpoint_id, event_seq",
    )
}

/// Killed (`kill -9`) with deliveries pending, one of them under way, and
/// restarted: every event is delivered, and settled exactly once.
async fn killed_with_deliveries_pending(backend: Backend) {
    use crate::served::serve;
    let Some((db, _)) = TestDb::create(backend) else {
        assert!(!crate::helpers::postgres_expected());
        return;
    };
    let url = db.url();
    let receiver = Receiver::start(Answer::Status(500)).await;
    // Three delivered, two failures, then one that the kill cuts off.
    receiver.script([
        Answer::Status(200),
        Answer::Status(200),
        Answer::Status(200),
        Answer::Status(500),
        Answer::Status(500),
        Answer::Sleep(Duration::from_secs(30)),
    ]);
    let env = [
        ("GATEKEEPER_WEBHOOK_ALLOW_PRIVATE", "1"),
        ("GATEKEEPER_WEBHOOK_RETRY_BASE_MS", "100"),
        ("GATEKEEPER_WEBHOOK_TIMEOUT", "5"),
        ("GATEKEEPER_IMPACT_INTERVAL", "1"),
    ];
    let mut first = serve(&url, &env).await;
    let (_, reseller) = first.setup().await;
    let (status, created, _) = first
        .call(
            "POST",
            "/v1/webhook-endpoints",
            &reseller,
            Some(json!({"url": receiver.url})),
            &[],
        )
        .await;
    assert_eq!(status, 201, "{created}");
    receiver.trust(&[created["secret"].as_str().unwrap()]);
    let endpoint = created["id"].as_str().unwrap().to_string();
    for _ in 0..12 {
        let (status, _, _) = first.issue_one(&reseller).await;
        assert_eq!(status, 201);
    }
    receiver
        .wait("the attempt the kill cuts off", WITHIN, |got| {
            got.len() >= 6
        })
        .await;
    first.kill();
    let settled_before = deliveries(&db).len();
    assert_eq!(settled_before, 3, "{:?}", deliveries(&db));

    // Back, and answering: the restarted service waits for the killed
    // one's lease on the endpoint to lapse, then delivers the rest.
    receiver.answer(Answer::Status(200));
    let data_dir = first.data_dir().to_string_lossy().to_string();
    let mut env = env.to_vec();
    env.push(("GATEKEEPER_DATA_DIR", data_dir.as_str()));
    let _again = serve(&url, &env).await;
    let database = gatekeeper::config::DatabaseUrl::parse(&url).unwrap();
    let events = outbox(&database, Some("alpha"));
    assert_eq!(events.len(), 12);
    receiver
        .wait(
            "every event after the restart",
            Duration::from_secs(90),
            |got| dedup(got).len() == 12,
        )
        .await;
    let got = receiver.got();
    assert_verified_and_faithful(&got, &events);
    assert_eq!(dedup(&got), ids(&events), "in seq order");
    // Settled once each (the primary key would refuse a second), delivered.
    let deadline = Instant::now() + WITHIN;
    while deliveries(&db).len() < 12 {
        assert!(Instant::now() < deadline, "not all settled");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let rows = deliveries(&db);
    let expected: Vec<(String, i64, String, String)> = events
        .iter()
        .map(|e| (endpoint.clone(), e.seq, e.id.clone(), "delivered".into()))
        .collect();
    let rows: Vec<(String, i64, String, String)> = rows
        .into_iter()
        .map(|d| (d.endpoint_id, d.event_seq, d.event_id, d.outcome))
        .collect();
    assert_eq!(rows, expected);
}

mod killed_with_deliveries_pending {
    #[actix_web::test]
    async fn sqlite() {
        super::killed_with_deliveries_pending(crate::helpers::Backend::Sqlite).await;
    }

    #[actix_web::test]
    async fn postgres() {
        super::killed_with_deliveries_pending(crate::helpers::Backend::Postgres).await;
    }
}
