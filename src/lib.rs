//! license-gatekeeper: screens software-licence transactions against
//! sanctions-style designations, refuses and records what the law
//! prohibits, and keeps a tamper-evident audit trail.
//!
//! Dependencies point one way: `api` → `gate` → (`policy`, `store`);
//! `policy` and `audit` are pure (no HTTP, SQL or clock).

pub mod api;
pub mod audit;
pub mod auth;
pub mod checkpoints;
pub mod config;
pub mod domain;
pub mod gate;
pub mod licenses;
pub mod metrics;
pub mod periodic;
pub mod policy;
pub mod startup;
pub mod store;
pub mod telemetry;
