//! The load harness's baseline: a bare actix-web JSON endpoint, with the
//! same worker count, body limit and JSON handling the service uses, but no
//! tokens, no decision and no database. What the gatekeeper answers per
//! second is reported as a ratio of what this answers in the same run.
//!
//!     cargo run --release --example bare-actix -- 127.0.0.1:18199

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::{json, Value};

async fn answer(body: web::Json<Value>) -> HttpResponse {
    let product = body.get("product").cloned().unwrap_or(Value::Null);
    HttpResponse::Ok().json(json!({
        "outcome": "allow",
        "product": product,
        "reasons": [],
    }))
}

fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18199".to_string());
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        HttpServer::new(|| {
            App::new()
                .app_data(web::JsonConfig::default().limit(64 * 1024))
                .route("/v1/decisions", web::post().to(answer))
        })
        .bind(listen)?
        .run()
        .await
    })
}
