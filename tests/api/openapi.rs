//! `openapi.yaml` is a tested contract: every documented operation is routed
//! (checked against the running server) and every routed one is documented.

use std::collections::BTreeSet;

use crate::helpers::{spawn_app, Backend};

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch"];

/// (path, method) pairs under `paths:` in openapi.yaml.
fn documented() -> BTreeSet<(String, String)> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    let mut out = BTreeSet::new();
    let mut in_paths = false;
    let mut path: Option<String> = None;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() {
            in_paths = line.trim_end() == "paths:";
            path = None;
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /") {
            path = Some(format!("/{}", p.trim_end().trim_end_matches(':')));
        } else if let (Some(p), Some(m)) = (&path, line.strip_prefix("    ")) {
            let m = m.trim_end().trim_end_matches(':');
            if METHODS.contains(&m) {
                out.insert((p.clone(), m.to_string()));
            }
        }
    }
    out
}

/// (path, method) pairs registered in `api::routes`.
fn routed() -> BTreeSet<(String, String)> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/api/mod.rs")).unwrap();
    let start = text.find("pub fn routes").unwrap();
    let body = &text[start..start + text[start..].find("\n}\n").unwrap()];
    let mut out = BTreeSet::new();
    for chunk in body.split("resource(").skip(1) {
        // `resource("PATH", "ALLOW")`, however rustfmt lays it out.
        let chunk = chunk.trim_start().trim_start_matches('"');
        let path = &chunk[..chunk.find('"').unwrap()];
        for m in METHODS {
            if chunk.contains(&format!("web::{m}()")) {
                out.insert((path.to_string(), m.to_string()));
            }
        }
    }
    out
}

#[test]
fn every_route_is_documented_and_every_documented_path_is_routed() {
    let doc = documented();
    let code = routed();
    assert!(
        code.len() >= 20,
        "the route parser found too little: {code:?}"
    );
    let undocumented: Vec<_> = code.difference(&doc).collect();
    let unrouted: Vec<_> = doc.difference(&code).collect();
    assert!(
        undocumented.is_empty(),
        "routed but not in openapi.yaml: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "in openapi.yaml but not routed: {unrouted:?}"
    );
}

/// The running server answers every documented operation with something
/// other than "no such route" (404 from the fallback) or 405.
#[actix_web::test]
async fn every_documented_operation_reaches_a_handler() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    for (path, method) in documented() {
        let concrete = path
            .replace("{id}", "some-id")
            .replace("{target}", "other-id")
            .replace("{sku}", "SOME-SKU")
            .replace("{k}", "0");
        let reply = app
            .send(
                &method.to_uppercase(),
                &concrete,
                None,
                Some(b"{}".to_vec()),
            )
            .await;
        let status = reply.status.as_u16();
        if path == "/v1/keys" {
            assert_eq!(status, 200, "the licence keys are public");
        } else if path == "/v1/status-lists/{k}" {
            // Public too, and with no licence yet there is no list 0; the
            // route is there (another method is 405, not the fallback's 404).
            reply.assert_problem(404, "not_found");
            let other = app.send("PUT", &concrete, None, None).await;
            other.assert_problem(405, "method_not_allowed");
        } else if path.starts_with("/v1/") {
            assert_eq!(
                status, 401,
                "{method} {path} should reach the token check: {}",
                reply.text
            );
        } else {
            assert!(status == 200 || status == 503, "{method} {path}: {status}");
        }
    }
    // The control: an undocumented path is not routed.
    assert_eq!(
        app.send("GET", "/v1/undocumented", None, None).await.status,
        404
    );
}

/// Whether `path` (a concrete path, or one with `{…}` segments) is an
/// instance of the documented `template`.
fn instance_of(path: &str, template: &str) -> bool {
    let (p, t): (Vec<&str>, Vec<&str>) = (path.split('/').collect(), template.split('/').collect());
    p.len() == t.len()
        && p.iter()
            .zip(&t)
            .all(|(p, t)| p == t || t.starts_with('{') || p.contains('{'))
}

/// Every `/v1/…` path the source writes out (the console's links and
/// forms, the impact preview's example change `/v1/organizations/example-labs`,
/// messages) is a documented path or an instance of one: nothing in `src/`
/// names a route that `openapi.yaml` does not have.
#[test]
fn every_path_the_source_names_is_a_documented_path_or_an_instance_of_one() {
    fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let templates: BTreeSet<String> = documented().into_iter().map(|(p, _)| p).collect();
    let mut files = Vec::new();
    sources(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        &mut files,
    );
    let mut named = BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for piece in text.split("\"/v1/").skip(1) {
            let end = piece
                .find(|c: char| c == '"' || c == '?' || c == '#' || c.is_whitespace())
                .unwrap_or(piece.len());
            let path = format!("/v1/{}", piece[..end].trim_end_matches('/'));
            named.insert((path, file.display().to_string()));
        }
    }
    assert!(
        named
            .iter()
            .any(|(p, _)| p == "/v1/organizations/example-labs"),
        "the scan found too little: {named:?}"
    );
    let unknown: Vec<_> = named
        .iter()
        .filter(|(p, _)| !templates.iter().any(|t| instance_of(p, t)))
        .collect();
    assert!(
        unknown.is_empty(),
        "named in src/ but not a documented path: {unknown:?}"
    );
}
