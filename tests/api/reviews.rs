//! The review queue: decisions in review are listed for compliance and
//! resolved once, with the reviewer in the audit trail.

use serde_json::{json, Value};

use crate::both;
use crate::helpers::TestApp;

async fn setup(app: &TestApp) {
    app.register("alpha", "BR", false).await;
    app.add_oem_firewall().await;
}

/// A licence request for a Brazilian customer of unknown U.S. status: 202.
async fn request_in_review(app: &TestApp) -> Value {
    let body = json!({"product": "ACME-FW-K", "seats": 40, "term_days": 200,
                      "customer": {"id": "br-1", "name": "Exemplo Ltda", "country": "BR"}});
    let r = app
        .client
        .post(format!("{}/v1/licenses", app.address))
        .insert_header(("authorization", format!("Bearer {}", app.reseller("alpha"))))
        .insert_header(("idempotency-key", uuid::Uuid::new_v4().to_string()))
        .send_json(&body)
        .await
        .unwrap();
    let r = crate::helpers::Reply::read(r).await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.body["decision"].clone()
}

fn attest(us_person: bool, note: &str) -> Value {
    json!({"resolution": "approve", "note": note,
           "customer": {"id": "br-1", "name": "Exemplo Ltda", "country": "BR", "us_person": us_person}})
}

both!(an_approved_review_issues_the_licence_that_was_asked_for);
async fn an_approved_review_issues_the_licence_that_was_asked_for(app: TestApp) {
    setup(&app).await;
    let decision = request_in_review(&app).await;
    let id = decision["id"].as_str().unwrap();
    let compliance = app.compliance();

    let queue = app.get("/v1/reviews", &compliance).await;
    assert_eq!(queue.status, 200, "{}", queue.text);
    let items = queue.body["reviews"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["decision"]["id"], id);
    assert_eq!(items[0]["reseller"], "alpha");
    assert_eq!(items[0]["request"]["seats"], 40);
    assert_eq!(items[0]["review"], json!({"status": "open"}));
    let seen = app
        .get(&format!("/v1/decisions/{id}"), &app.reseller("alpha"))
        .await;
    assert_eq!(seen.body["review"], json!({"status": "open"}));

    let approved = app
        .post(
            &format!("/v1/reviews/{id}"),
            &compliance,
            attest(
                false,
                "Customer attests no U.S. ownership (letter on file).",
            ),
        )
        .await;
    assert_eq!(approved.status, 200, "{}", approved.text);
    let review = &approved.body["review"];
    assert_eq!(review["status"], "approved");
    assert_eq!(review["reviewer"]["role"], "compliance");
    let license = &approved.body["license"];
    assert_eq!(license["seats"], 40, "the licence that was asked for");
    assert_eq!(license["reseller"], "alpha");
    assert_eq!(license["customer"]["us_person"], false);
    assert_eq!(review["license_id"], license["id"]);
    assert_eq!(approved.body["decision"]["outcome"], "allow");
    let starts =
        chrono::DateTime::parse_from_rfc3339(license["starts_at"].as_str().unwrap()).unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(license["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        expires - starts,
        chrono::Duration::days(200),
        "the term that was asked for"
    );

    // The reseller sees the outcome on its decision (not the reviewer's
    // note or name), and has the licence; compliance sees it all.
    let seen = app
        .get(&format!("/v1/decisions/{id}"), &app.reseller("alpha"))
        .await;
    assert_eq!(
        seen.body["review"],
        json!({"status": "approved", "outcome": "allow", "decision_id": review["decision_id"],
               "license_id": review["license_id"], "resolved_at": review["resolved_at"]})
    );
    let full = app.get(&format!("/v1/decisions/{id}"), &compliance).await;
    assert_eq!(full.body["review"], *review);
    let mine = app.get("/v1/licenses", &app.reseller("alpha")).await;
    assert_eq!(mine.body["licenses"].as_array().unwrap().len(), 1);

    // Once only.
    app.post(
        &format!("/v1/reviews/{id}"),
        &compliance,
        attest(false, "again"),
    )
    .await
    .assert_problem(409, "review_resolved");
    assert_eq!(
        app.get("/v1/reviews", &compliance).await.body["reviews"],
        json!([])
    );
    let all = app.get("/v1/reviews?status=all", &compliance).await;
    assert_eq!(all.body["reviews"][0]["review"]["status"], "approved");

    // Audited with the reviewer.
    let events = app.all_events().await;
    let resolved = events
        .iter()
        .find(|e| e["action"] == "review.approve")
        .expect("a review.approve event");
    assert_eq!(resolved["actor"]["role"], "compliance");
    assert_eq!(resolved["subject"]["id"], id);
    assert_eq!(
        resolved["subject"]["note"],
        "Customer attests no U.S. ownership (letter on file)."
    );
    let issued = events
        .iter()
        .filter(|e| e["action"] == "decision.issue" && e["outcome"] == "allow")
        .collect::<Vec<_>>();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0]["actor"]["role"], "compliance");
    assert_eq!(issued[0]["subject"]["license"]["id"], license["id"]);
}

both!(reviews_can_be_rejected_or_end_in_a_refusal);
async fn reviews_can_be_rejected_or_end_in_a_refusal(app: TestApp) {
    setup(&app).await;
    let compliance = app.compliance();
    let first = request_in_review(&app).await;
    let id = first["id"].as_str().unwrap();
    let rejected = app
        .post(
            &format!("/v1/reviews/{id}"),
            &compliance,
            json!({"resolution": "reject", "note": "No reply from customer."}),
        )
        .await;
    assert_eq!(rejected.status, 200, "{}", rejected.text);
    assert_eq!(rejected.body["review"]["status"], "rejected");
    assert_eq!(rejected.body.get("license"), None);

    // The attested facts make it a U.S. person: approval re-decides, and refuses.
    let second = request_in_review(&app).await;
    let id = second["id"].as_str().unwrap();
    let denied = app
        .post(
            &format!("/v1/reviews/{id}"),
            &compliance,
            attest(true, "U.S. parent company."),
        )
        .await;
    assert_eq!(denied.status, 200, "{}", denied.text);
    assert_eq!(denied.body["review"]["status"], "denied");
    assert_eq!(denied.body["decision"]["outcome"], "deny");
    assert_eq!(
        denied.body.get("code"),
        None,
        "a resolution, not a problem: {}",
        denied.text
    );
    assert_eq!(
        app.get("/v1/licenses", &app.reseller("alpha")).await.body["licenses"],
        json!([])
    );

    // Approving without attesting the U.S. status leaves it open.
    let third = request_in_review(&app).await;
    let id = third["id"].as_str().unwrap();
    let vague = app
        .post(
            &format!("/v1/reviews/{id}"),
            &compliance,
            json!({"resolution": "approve", "note": "looks fine"}),
        )
        .await;
    vague.assert_problem(422, "validation_failed");
    assert_eq!(vague.fields(), vec!["customer.us_person"]);
    let open = app.get("/v1/reviews", &compliance).await;
    assert_eq!(open.body["reviews"].as_array().unwrap().len(), 1);

    // Bad requests.
    app.post(
        &format!("/v1/reviews/{id}"),
        &compliance,
        json!({"resolution": "approve", "note": " "}),
    )
    .await
    .assert_problem(422, "validation_failed");
    app.post(
        &format!("/v1/reviews/{id}"),
        &compliance,
        json!({"resolution": "maybe", "note": "x"}),
    )
    .await
    .assert_problem(422, "validation_failed");
    app.post(
        &format!("/v1/reviews/{id}"),
        &app.reseller("alpha"),
        json!({"resolution": "reject", "note": "x"}),
    )
    .await
    .assert_problem(403, "forbidden");
    app.get("/v1/reviews", &app.admin())
        .await
        .assert_problem(403, "forbidden");
    let not_review = app
        .preflight(
            "alpha",
            json!({"transaction": "issue", "product": "ACME-FW-K",
                                   "customer": {"id": "c", "name": "n", "country": "US"}}),
        )
        .await;
    let nid = not_review.body["decision"]["id"].as_str().unwrap();
    app.post(
        &format!("/v1/reviews/{nid}"),
        &compliance,
        json!({"resolution": "reject", "note": "x"}),
    )
    .await
    .assert_problem(404, "not_found");
}

both!(approving_twice_at_once_acts_once);
async fn approving_twice_at_once_acts_once(app: TestApp) {
    setup(&app).await;
    let decision = request_in_review(&app).await;
    let path = format!("/v1/reviews/{}", decision["id"].as_str().unwrap());
    let compliance = app.compliance();
    let replies = futures_util::future::join_all(
        (0..4).map(|_| app.post(&path, &compliance, attest(false, "attested"))),
    )
    .await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    assert_eq!(
        ok,
        1,
        "{:?}",
        replies.iter().map(|r| r.text.clone()).collect::<Vec<_>>()
    );
    assert!(replies
        .iter()
        .filter(|r| r.status != 200)
        .all(|r| r.status == 409));
    assert_eq!(
        app.get("/v1/licenses", &app.reseller("alpha")).await.body["licenses"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

both!(a_preflight_review_is_re_decided_and_what_ifs_are_not_queued);
async fn a_preflight_review_is_re_decided_and_what_ifs_are_not_queued(app: TestApp) {
    setup(&app).await;
    let ask = |as_of: Option<&str>| {
        let mut body = json!({"transaction": "issue", "product": "ACME-FW-K",
                              "customer": {"id": "br-9", "name": "Exemplo", "country": "BR"}});
        if let Some(t) = as_of {
            body["as_of"] = json!(t);
        }
        body
    };
    let what_if = app
        .preflight("alpha", ask(Some("2025-01-01T00:00:00Z")))
        .await;
    assert_eq!(what_if.body["decision"]["outcome"], "review");
    let real = app.preflight("alpha", ask(None)).await;
    assert_eq!(real.body["decision"]["outcome"], "review");
    let queue = app.get("/v1/reviews", &app.compliance()).await;
    let ids: Vec<&Value> = queue.body["reviews"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["decision"]["id"])
        .collect();
    assert_eq!(
        ids,
        vec![&real.body["decision"]["id"]],
        "a what-if question is not a transaction to review"
    );

    let id = real.body["decision"]["id"].as_str().unwrap();
    let body = json!({"resolution": "approve", "note": "attested",
                      "customer": {"id": "br-9", "name": "Exemplo", "country": "BR", "us_person": false}});
    let approved = app
        .post(&format!("/v1/reviews/{id}"), &app.compliance(), body)
        .await;
    assert_eq!(approved.status, 200, "{}", approved.text);
    assert_eq!(approved.body["decision"]["outcome"], "allow");
    assert_eq!(approved.body["decision"]["transaction"], "issue");
    assert_eq!(approved.body["review"]["status"], "approved");
    assert_eq!(
        approved.body.get("license"),
        None,
        "a preflight asked for no licence"
    );
}

/// Approves review `id` attesting `customer` (us_person false).
async fn approve_as(app: &TestApp, id: &str, customer_id: &str) -> crate::helpers::Reply {
    app.post(
        &format!("/v1/reviews/{id}"),
        &app.compliance(),
        json!({"resolution": "approve", "note": "Attested in writing.",
               "customer": {"id": customer_id, "name": "Exemplo Ltda", "country": "BR", "us_person": false}}),
    )
    .await
}

/// A review that swapped the customer is refused on `customer.id`, and
/// leaves everything as it was: the review open, the trail unchanged.
async fn assert_swap_refused(app: &TestApp, id: &str) {
    let events = app.all_events().await.len();
    let swapped = approve_as(app, id, "br-2").await;
    swapped.assert_problem(422, "validation_failed");
    assert_eq!(swapped.fields(), vec!["customer.id"], "{}", swapped.text);
    assert_eq!(app.all_events().await.len(), events, "nothing recorded");
    let queue = app.get("/v1/reviews", &app.compliance()).await;
    assert_eq!(queue.body["reviews"][0]["decision"]["id"], id);
    assert_eq!(
        queue.body["reviews"][0]["review"],
        json!({"status": "open"})
    );
    // Nor may a rejection record another customer's facts.
    let rejected = app
        .post(
            &format!("/v1/reviews/{id}"),
            &app.compliance(),
            json!({"resolution": "reject", "note": "n",
                   "customer": {"id": "br-2", "name": "Outra Ltda", "country": "BR"}}),
        )
        .await;
    assert_eq!(rejected.fields(), vec!["customer.id"], "{}", rejected.text);
}

both!(attested_facts_keep_the_reviewed_customer);
async fn attested_facts_keep_the_reviewed_customer(app: TestApp) {
    setup(&app).await;
    let alpha = app.reseller("alpha");

    // An issue in review: the reviewer cannot make it another customer's.
    let decision = request_in_review(&app).await;
    let id = decision["id"].as_str().unwrap();
    assert_swap_refused(&app, id).await;
    let mine = app.get("/v1/licenses", &alpha).await;
    assert_eq!(mine.body["licenses"], json!([]), "no licence for anyone");
    let approved = approve_as(&app, id, "br-1").await;
    assert_eq!(approved.status, 200, "{}", approved.text);
    let licence = approved.body["license"].clone();
    assert_eq!(licence["customer"]["id"], "br-1");

    // A renewal in review (the facts sent leave the nexus unknown): nor
    // that one; the licence still names its customer.
    let licence_id = licence["id"].as_str().unwrap();
    let r = app
        .client
        .post(format!("{}/v1/licenses/{licence_id}/renewals", app.address))
        .insert_header(("authorization", format!("Bearer {alpha}")))
        .insert_header(("idempotency-key", uuid::Uuid::new_v4().to_string()))
        .send_json(&json!({"term_days": 30,
                           "customer": {"id": "br-1", "name": "Exemplo Ltda", "country": "BR"}}))
        .await
        .unwrap();
    let r = crate::helpers::Reply::read(r).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.body["decision"]["id"].as_str().unwrap();
    assert_swap_refused(&app, id).await;
    let now = app.get(&format!("/v1/licenses/{licence_id}"), &alpha).await;
    assert_eq!(now.body, licence, "the licence is as it was");
    let approved = approve_as(&app, id, "br-1").await;
    assert_eq!(approved.status, 200, "{}", approved.text);
    assert_eq!(approved.body["license"]["id"], licence_id);
    assert_eq!(approved.body["license"]["customer"]["id"], "br-1");
}

both!(an_unreadable_review_does_not_take_the_queue_down);
async fn an_unreadable_review_does_not_take_the_queue_down(app: TestApp) {
    setup(&app).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let decision = request_in_review(&app).await;
        ids.push(decision["id"].as_str().unwrap().to_string());
    }
    app.db
        .execute(&format!(
            "UPDATE decisions SET request = 'not json' WHERE id = '{}'",
            ids[1]
        ))
        .unwrap();
    for limit in [1, 100] {
        let mut seen = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = app
                .get(
                    &format!("/v1/reviews?limit={limit}&cursor={cursor}"),
                    &app.compliance(),
                )
                .await;
            assert_eq!(page.status, 200, "{}", page.text);
            for r in page.body["reviews"].as_array().unwrap() {
                seen.push(r["decision"]["id"].as_str().unwrap().to_string());
            }
            match page.body["next"].as_str() {
                Some(next) => cursor = next.to_string(),
                None => break,
            }
        }
        assert_eq!(
            seen,
            vec![ids[0].clone(), ids[2].clone()],
            "pages of {limit}"
        );
    }
}
