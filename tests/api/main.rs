//! HTTP integration tests: the real server, real signed tokens, a fresh
//! database per test, on SQLite and (with `TEST_DATABASE_URL`) PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod attacks;
mod audit;
mod auth;
mod catalog;
mod cli;
mod console;
mod decisions;
mod edges;
mod errors;
mod events;
mod faults;
mod identity;
mod impact;
mod impact_faults;
mod keys;
mod ledger;
mod licenses;
mod lifecycle;
mod oidc_provider;
mod openapi;
mod ops;
mod replicas;
mod reviews;
mod served;
mod standing;
mod status_lists;
mod tampering;
mod webhook_endpoints;
mod webhooks_delivery;
