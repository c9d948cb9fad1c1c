//! The catalogue tables (resellers, organisations, relationships, products,
//! designations): reading the committed catalogue into its snapshot, and
//! committing changes to it, each with its audit event and the version
//! bump, under the locked ledger head.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use serde_json::Value;

use super::audit::{append_event, vouch_catalog, NewEvent};
use super::schema::{self, ledger_head};
use super::{format_instant, DbConn, Head, Store, StoreError};
use crate::domain::{Actor, DesignationId, OrgId, ResellerId, Sku};
use crate::policy::{Catalog, CatalogChange, CatalogData, RelationshipSpec};

/// What a committed catalogue change produced.
#[derive(Debug)]
pub struct Applied {
    /// The new snapshot, built from the committed state.
    pub catalog: Catalog,
    /// The catalogue as it was before the change.
    pub before: CatalogData,
    /// For each change, in order: whether it created its entry.
    pub created: Vec<bool>,
    pub audit_seqs: Vec<i64>,
}

impl Store {
    /// Reads the committed catalogue and builds its snapshot. The version
    /// and every table are read in one snapshot of the database, so a
    /// change committing meanwhile is either wholly in or wholly out. A
    /// catalogue the audit chain does not vouch for is
    /// [`StoreError::Unvouched`] (see `audit::verify::vouch_catalog`).
    pub fn load_catalog(&self) -> Result<Catalog, StoreError> {
        let mut pooled = self.conn()?;
        let conn: &mut DbConn = &mut pooled;
        let (version, data) = conn.transaction(|conn| {
            // BACKEND-SPECIFIC: PostgreSQL's default isolation gives each
            // statement its own snapshot; SQLite's transactions are snapshots.
            if let DbConn::Postgres(pg) = conn {
                pg.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
            }
            let (seq, hash, version) = ledger_head::table
                .select((
                    ledger_head::seq,
                    ledger_head::hash,
                    ledger_head::catalog_version,
                ))
                .first::<(i64, String, i64)>(conn)?;
            // A catalogue row that does not even parse was edited behind
            // the service's back: not served, like any other such edit.
            let data = load_catalog_data(conn).map_err(|e| match e {
                StoreError::Corrupt(what) => StoreError::Unvouched(what),
                other => other,
            })?;
            vouch_catalog(conn, (seq, &hash), version, &data)?;
            Ok::<_, StoreError>((version, data))
        })?;
        build_catalog(version, data)
    }

    /// The committed catalogue version (cheap: one row).
    pub fn catalog_version(&self) -> Result<i64, StoreError> {
        let mut conn = self.conn()?;
        Ok(ledger_head::table
            .select(ledger_head::catalog_version)
            .first::<i64>(&mut *conn)?)
    }

    /// Commits catalogue changes as `actor` in one audited write, outside
    /// the service (the CLI's `catalog import`): one event per change, and
    /// the catalogue's digest on the last. Invalid changes write nothing.
    pub fn import_catalog(
        &self,
        actor: &Actor,
        changes: Vec<CatalogChange>,
        then: impl FnOnce(&mut DbConn, &mut Head, &Applied) -> Result<(), StoreError>,
    ) -> Result<Applied, StoreError> {
        // `then` writes what the change starts (its impact run) in its
        // transaction.
        self.write(|conn, head| {
            let applied = apply_catalog_changes(conn, head, actor, &changes)?;
            then(conn, head, &applied)?;
            Ok(applied)
        })
    }

    pub(super) fn apply_changes_if(
        &self,
        actor: &Actor,
        changes: Vec<CatalogChange>,
        precondition: impl Fn(&Head) -> bool,
    ) -> Result<Applied, StoreError> {
        self.write(|conn, head| {
            if !precondition(head) {
                return Err(StoreError::Stale);
            }
            apply_catalog_changes(conn, head, actor, &changes)
        })
    }
}

/// Commits catalogue changes with one audit event each (a ledger write).
pub fn apply_catalog_changes(
    conn: &mut DbConn,
    head: &mut Head,
    actor: &Actor,
    changes: &[CatalogChange],
) -> Result<Applied, StoreError> {
    head.immediate(conn)?;
    let mut data = load_catalog_data(conn)?;
    // A catalogue edited behind the service's back is not built on: the
    // change would launder the edit into the chain.
    vouch_catalog(conn, (head.seq, &head.hash), head.catalog_version, &data)?;
    let before = data.clone();
    let mut created = Vec::with_capacity(changes.len());
    for change in changes {
        created.push(change.apply(&mut data).map_err(|_| StoreError::NotFound)?);
    }
    // The last event of the commit records the catalogue it leaves.
    let digest = crate::audit::state::catalog_digest(&data);
    let version = head.catalog_version + 1;
    let catalog = Catalog::build(version, data).map_err(StoreError::Invalid)?;
    let now = Utc::now();
    let mut audit_seqs = Vec::with_capacity(changes.len());
    let last = changes.len().saturating_sub(1);
    for (i, (change, was_created)) in changes.iter().zip(&created).enumerate() {
        write_catalog_row(conn, change, now)?;
        let spec = change
            .spec_json()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let change_word = match (change, was_created) {
            (CatalogChange::DeleteRelationship(..), _) => "delete",
            (_, true) => "create",
            (_, false) => "replace",
        };
        let mut subject = serde_json::json!({
            "kind": change.kind(), "id": change.id(), "change": change_word,
        });
        if let Some(spec) = spec {
            subject["spec"] = spec;
        }
        // The whole catalogue as the commit leaves it, on its last event.
        if i == last {
            subject["catalog_digest"] = Value::from(digest.as_str());
        }
        let verb = if change_word == "delete" {
            "delete"
        } else {
            "put"
        };
        let reseller = match change {
            CatalogChange::PutReseller(id, _) => Some(id.to_string()),
            _ => None,
        };
        let event = NewEvent {
            action: format!("catalog.{}.{verb}", change.kind()),
            actor: actor.clone(),
            outcome: None,
            decision: None,
            subject,
            reseller,
        };
        audit_seqs.push(append_event(head, event, &version.to_string(), now)?);
    }
    head.catalog_version = version;
    Ok(Applied {
        catalog,
        before,
        created,
        audit_seqs,
    })
}

fn build_catalog(version: i64, data: CatalogData) -> Result<Catalog, StoreError> {
    Catalog::build(version, data).map_err(|issues| {
        StoreError::Corrupt(format!(
            "the stored catalogue does not validate: {issues:?}"
        ))
    })
}

fn load_specs<T: serde::de::DeserializeOwned, K: Ord>(
    rows: Vec<(String, String)>,
    key: impl Fn(&str) -> Result<K, String>,
) -> Result<BTreeMap<K, T>, StoreError> {
    rows.into_iter()
        .map(|(id, spec)| {
            let k = key(&id).map_err(|e| StoreError::Corrupt(format!("key {id:?}: {e}")))?;
            let v = serde_json::from_str(&spec)
                .map_err(|e| StoreError::Corrupt(format!("entry {id:?}: {e}")))?;
            Ok((k, v))
        })
        .collect()
}

pub(crate) fn load_catalog_data(conn: &mut DbConn) -> Result<CatalogData, StoreError> {
    use schema::{designations, organizations, products, relationships, resellers};
    let resellers = load_specs(
        resellers::table
            .select((resellers::id, resellers::spec))
            .load(conn)?,
        ResellerId::parse,
    )?;
    let organizations = load_specs(
        organizations::table
            .select((organizations::id, organizations::spec))
            .load(conn)?,
        OrgId::parse,
    )?;
    let products = load_specs(
        products::table
            .select((products::sku, products::spec))
            .load(conn)?,
        Sku::parse,
    )?;
    let designations = load_specs(
        designations::table
            .select((designations::id, designations::spec))
            .load(conn)?,
        DesignationId::parse,
    )?;
    let mut rels = BTreeMap::new();
    let rows: Vec<(String, String, String)> = relationships::table
        .select((
            relationships::source,
            relationships::target,
            relationships::kind,
        ))
        .load(conn)?;
    for (source, target, kind) in rows {
        let corrupt =
            |e: String| StoreError::Corrupt(format!("relationship {source}/{target}: {e}"));
        let spec: RelationshipSpec = serde_json::from_value(serde_json::json!({ "kind": kind }))
            .map_err(|e| corrupt(e.to_string()))?;
        rels.insert(
            (
                OrgId::parse(&source).map_err(corrupt)?,
                OrgId::parse(&target).map_err(corrupt)?,
            ),
            spec.kind,
        );
    }
    Ok(CatalogData {
        resellers,
        organizations,
        relationships: rels,
        products,
        designations,
    })
}

/// Inserts or replaces the row of one catalogue entry (or deletes it).
fn write_catalog_row(
    conn: &mut DbConn,
    change: &CatalogChange,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    use schema::{designations, organizations, products, relationships, resellers};
    let now = format_instant(now);
    let spec = change
        .spec_json()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?
        .map(|v| v.to_string())
        .unwrap_or_default();
    // Plain delete-then-insert keeps the SQL portable across both backends.
    macro_rules! replace {
        ($table:ident, $key:ident, $id:expr) => {{
            diesel::delete($table::table.filter($table::$key.eq($id))).execute(conn)?;
            diesel::insert_into($table::table)
                .values((
                    $table::$key.eq($id),
                    $table::spec.eq(&spec),
                    $table::updated_at.eq(&now),
                ))
                .execute(conn)?;
        }};
    }
    match change {
        CatalogChange::PutReseller(id, _) => replace!(resellers, id, id.as_str()),
        CatalogChange::PutOrganization(id, _) => replace!(organizations, id, id.as_str()),
        CatalogChange::PutProduct(sku, _) => replace!(products, sku, sku.as_str()),
        CatalogChange::PutDesignation(id, _) => replace!(designations, id, id.as_str()),
        CatalogChange::PutRelationship(s, t, spec) => {
            diesel::delete(
                relationships::table
                    .filter(relationships::source.eq(s.as_str()))
                    .filter(relationships::target.eq(t.as_str())),
            )
            .execute(conn)?;
            diesel::insert_into(relationships::table)
                .values((
                    relationships::source.eq(s.as_str()),
                    relationships::target.eq(t.as_str()),
                    relationships::kind.eq(spec.kind.as_str()),
                    relationships::updated_at.eq(&now),
                ))
                .execute(conn)?;
        }
        CatalogChange::DeleteRelationship(s, t) => {
            diesel::delete(
                relationships::table
                    .filter(relationships::source.eq(s.as_str()))
                    .filter(relationships::target.eq(t.as_str())),
            )
            .execute(conn)?;
        }
    }
    Ok(())
}
