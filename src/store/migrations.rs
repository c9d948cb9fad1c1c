//! The schema's migrations (one set per backend, embedded in the binary)
//! and the shipped catalogue a new database is seeded with.

use std::collections::BTreeMap;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::ManageConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use serde::Deserialize;

use super::{schema, DbConn, Manager, Store, StoreError};
use crate::domain::{Actor, DesignationId, OrgId};
use crate::policy::{CatalogChange, DesignationSpec, OrganizationSpec};

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

impl Store {
    /// Runs pending migrations, then installs the shipped catalogue into a
    /// new database (through the audited write path, as `system`).
    pub fn migrate(&self) -> anyhow::Result<()> {
        // With nothing pending, touch nothing: a service role that may not
        // create tables (deploy/postgres-roles.sql) starts all the same.
        if self.migrations_applied().unwrap_or(false) {
            return self.seed();
        }
        // A connection of its own with no lock timeout: a replica waits for
        // another's migration however long it takes (seeding a new
        // database, below, is bounded like any write).
        let mut conn = Manager {
            url: self.url.clone(),
            lock_timeout: None,
        }
        .connect()?;
        // BACKEND-SPECIFIC: migrations, and PostgreSQL's lock that keeps two
        // replicas from migrating at once.
        match &mut conn {
            DbConn::Postgres(pg) => {
                pg.batch_execute("SELECT pg_advisory_lock(7474001)")?;
                let result = pg
                    .run_pending_migrations(POSTGRES_MIGRATIONS)
                    .map(|_| ())
                    .map_err(|e| anyhow::anyhow!("migrating PostgreSQL: {e}"));
                pg.batch_execute("SELECT pg_advisory_unlock(7474001)")?;
                result?;
            }
            DbConn::Sqlite(lite) => {
                lite.run_pending_migrations(SQLITE_MIGRATIONS)
                    .map_err(|e| anyhow::anyhow!("migrating SQLite: {e}"))?;
            }
        }
        drop(conn);
        self.seed()
    }

    /// Whether every migration is applied, read from diesel's bookkeeping
    /// table without creating it (as `pending_migrations` would).
    pub fn migrations_applied(&self) -> Result<bool, StoreError> {
        use diesel::migration::MigrationSource;
        let mut conn = self.conn()?;
        // BACKEND-SPECIFIC: the embedded migrations of the backend.
        let wanted = match &*conn {
            DbConn::Postgres(_) => {
                MigrationSource::<diesel::pg::Pg>::migrations(&POSTGRES_MIGRATIONS).map(versions)
            }
            DbConn::Sqlite(_) => {
                MigrationSource::<diesel::sqlite::Sqlite>::migrations(&SQLITE_MIGRATIONS)
                    .map(versions)
            }
        }
        .map_err(|e| StoreError::Corrupt(format!("reading the embedded migrations: {e}")))?;
        let applied: Vec<String> = match schema::__diesel_schema_migrations::table
            .select(schema::__diesel_schema_migrations::version)
            .load(&mut *conn)
        {
            Ok(applied) => applied,
            // No bookkeeping table yet: nothing is applied.
            Err(diesel::result::Error::DatabaseError(..)) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        Ok(wanted.iter().all(|v| applied.contains(v)))
    }

    fn seed(&self) -> anyhow::Result<()> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Seed {
            organizations: BTreeMap<OrgId, OrganizationSpec>,
            designations: BTreeMap<DesignationId, DesignationSpec>,
        }
        // Seeded already (read without a lock, so that a replica starts
        // while another holds the ledger head for a while).
        if self.catalog_version()? != 0 {
            return Ok(());
        }
        let seed: Seed = serde_json::from_str(include_str!("seed.json"))?;
        let mut changes: Vec<CatalogChange> = seed
            .organizations
            .into_iter()
            .map(|(id, spec)| CatalogChange::PutOrganization(id, spec))
            .collect();
        changes.extend(
            seed.designations
                .into_iter()
                .map(|(id, spec)| CatalogChange::PutDesignation(id, spec)),
        );
        match self.apply_changes_if(&Actor::system(), changes, |head| head.catalog_version == 0) {
            Ok(_) => Ok(()),
            Err(StoreError::Stale) => Ok(()), // already seeded
            Err(StoreError::Invalid(issues)) => {
                anyhow::bail!("the shipped catalogue is invalid: {issues:?}")
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn versions<DB: diesel::backend::Backend>(
    migrations: Vec<Box<dyn diesel::migration::Migration<DB>>>,
) -> Vec<String> {
    migrations
        .iter()
        .map(|m| m.name().version().to_string())
        .collect()
}
