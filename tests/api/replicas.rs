//! Three `gatekeeper serve` processes on one PostgreSQL database, under load.
