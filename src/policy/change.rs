//! A change to the catalogue, as the admin routes, the CLI's import and
//! the seed ask for it: what it changes (`kind`, `id`), its spec, and how
//! it applies to the catalogue's data. The store commits it.

use serde_json::Value;

use super::{
    CatalogData, DesignationSpec, OrganizationSpec, ProductSpec, RelationshipSpec, ResellerSpec,
};
use crate::domain::{DesignationId, OrgId, ResellerId, Sku};

/// What deleting an entry that is not there is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotFound;

/// One change to the catalogue.
#[derive(Clone, Debug)]
pub enum CatalogChange {
    PutReseller(ResellerId, ResellerSpec),
    PutOrganization(OrgId, OrganizationSpec),
    PutRelationship(OrgId, OrgId, RelationshipSpec),
    DeleteRelationship(OrgId, OrgId),
    PutProduct(Sku, ProductSpec),
    PutDesignation(DesignationId, DesignationSpec),
}

impl CatalogChange {
    /// A put of one entry from its `kind`, `id` and `spec` (the request body
    /// of its admin route), as a catalogue event's subject holds them; an
    /// invalid one is an error message.
    pub fn put(kind: &str, id: &str, spec: Value) -> Result<CatalogChange, String> {
        fn body<T: serde::de::DeserializeOwned>(spec: Value) -> Result<T, String> {
            serde_json::from_value(spec).map_err(|e| format!("spec: {e}"))
        }
        Ok(match kind {
            "reseller" => CatalogChange::PutReseller(ResellerId::parse(id)?, body(spec)?),
            "organization" => CatalogChange::PutOrganization(OrgId::parse(id)?, body(spec)?),
            "product" => CatalogChange::PutProduct(Sku::parse(id)?, body(spec)?),
            "designation" => CatalogChange::PutDesignation(DesignationId::parse(id)?, body(spec)?),
            "relationship" => {
                let (source, target) = id
                    .split_once('/')
                    .ok_or_else(|| format!("a relationship's id is source/target, not {id:?}"))?;
                CatalogChange::PutRelationship(
                    OrgId::parse(source)?,
                    OrgId::parse(target)?,
                    body(spec)?,
                )
            }
            other => return Err(format!("unknown kind {other:?}")),
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            CatalogChange::PutReseller(..) => "reseller",
            CatalogChange::PutOrganization(..) => "organization",
            CatalogChange::PutRelationship(..) | CatalogChange::DeleteRelationship(..) => {
                "relationship"
            }
            CatalogChange::PutProduct(..) => "product",
            CatalogChange::PutDesignation(..) => "designation",
        }
    }

    pub fn id(&self) -> String {
        match self {
            CatalogChange::PutReseller(id, _) => id.to_string(),
            CatalogChange::PutOrganization(id, _) => id.to_string(),
            CatalogChange::PutRelationship(s, t, _) | CatalogChange::DeleteRelationship(s, t) => {
                format!("{s}/{t}")
            }
            CatalogChange::PutProduct(sku, _) => sku.to_string(),
            CatalogChange::PutDesignation(id, _) => id.to_string(),
        }
    }

    /// Applies the change to `data`; returns whether it created the entry.
    /// Deleting a relationship that is not there is [`NotFound`].
    pub fn apply(&self, data: &mut CatalogData) -> Result<bool, NotFound> {
        Ok(match self.clone() {
            CatalogChange::PutReseller(id, spec) => data.resellers.insert(id, spec).is_none(),
            CatalogChange::PutOrganization(id, spec) => {
                data.organizations.insert(id, spec).is_none()
            }
            CatalogChange::PutRelationship(s, t, spec) => {
                data.relationships.insert((s, t), spec.kind).is_none()
            }
            CatalogChange::DeleteRelationship(s, t) => {
                data.relationships.remove(&(s, t)).ok_or(NotFound)?;
                false
            }
            CatalogChange::PutProduct(sku, spec) => data.products.insert(sku, spec).is_none(),
            CatalogChange::PutDesignation(id, spec) => data.designations.insert(id, spec).is_none(),
        })
    }

    pub fn spec_json(&self) -> Result<Option<Value>, serde_json::Error> {
        match self {
            CatalogChange::PutReseller(_, s) => serde_json::to_value(s).map(Some),
            CatalogChange::PutOrganization(_, s) => serde_json::to_value(s).map(Some),
            CatalogChange::PutRelationship(_, _, s) => serde_json::to_value(s).map(Some),
            CatalogChange::DeleteRelationship(..) => Ok(None),
            CatalogChange::PutProduct(_, s) => serde_json::to_value(s).map(Some),
            CatalogChange::PutDesignation(_, s) => serde_json::to_value(s).map(Some),
        }
    }
}
