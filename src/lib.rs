//! license-gatekeeper: screens software-licence transactions against
//! sanctions-style designations, refuses and records what the law
//! prohibits, and keeps a tamper-evident audit trail.
//!
//! Dependencies point one way: `api` → `gate` → (`store`, `policy`,
//! `audit`) → `domain`. `policy` and `audit` are pure (no HTTP, SQL or
//! clock); `gate` knows neither HTTP nor SQL. The edge modules (`auth`,
//! `config`, `metrics`, `telemetry`, `signing`, `status_list`, `periodic`, `webhook`) import nothing
//! above them; `startup` and the binary put the rooms together.

pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
pub mod console;
pub mod domain;
pub mod gate;
pub mod metrics;
pub mod periodic;
pub mod policy;
pub mod signing;
pub mod startup;
pub mod status_list;
pub mod store;
pub mod telemetry;
pub mod webhook;
