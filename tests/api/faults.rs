//! Database faults on PostgreSQL under load, each reconciled against the
//! database afterwards.
