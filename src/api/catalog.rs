//! Catalogue routes (admin writes; admin and compliance read). Each PUT
//! creates or replaces one entry, audited, and swaps in the new snapshot.

use std::collections::BTreeMap;
use std::fmt::Display;

use actix_web::{web, HttpResponse};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use super::{ApiError, FieldError, PendingBody, State};
use crate::auth::{Principal, Role};
use crate::domain::{DesignationId, OrgId, ResellerId, Sku};
use crate::policy::CatalogChange;
use crate::policy::{
    CatalogData, CatalogIssue, DesignationSpec, OrganizationSpec, ProductSpec, RelationshipSpec,
    ResellerSpec,
};

const WRITERS: &[Role] = &[Role::Admin];
const READERS: &[Role] = &[Role::Admin, Role::Compliance];

/// How a form (the console's) edits a top-level field of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// A string; left empty, the field is left out (an optional one).
    Text,
    /// `true` or `false`.
    Flag,
    /// Any other JSON value (a list, an object), written as JSON.
    Json,
}

/// A kind of catalogue entry that is PUT and GET by its identifier.
pub trait Entry: Serialize + DeserializeOwned + Clone + Send + 'static {
    type Id: Clone + Ord + Display + Send + 'static;
    /// Its body's fields, in the order a form shows them.
    const FIELDS: &'static [(&'static str, FieldKind)];
    /// The entity name used in catalogue issues and audit actions.
    const KIND: &'static str;
    /// The key of the list in `GET /v1/<plural>`.
    const PLURAL: &'static str;
    /// The name of the identifier field in responses.
    const ID_FIELD: &'static str;
    fn parse_id(s: &str) -> Result<Self::Id, String>;
    fn change(id: Self::Id, spec: Self) -> CatalogChange;
    fn entries(data: &CatalogData) -> &BTreeMap<Self::Id, Self>;
}

macro_rules! entry {
    ($spec:ty, $id:ty, $kind:literal, $plural:literal, $id_field:literal, $variant:ident, $field:ident, $fields:expr) => {
        impl Entry for $spec {
            type Id = $id;
            const FIELDS: &'static [(&'static str, FieldKind)] = $fields;
            const KIND: &'static str = $kind;
            const PLURAL: &'static str = $plural;
            const ID_FIELD: &'static str = $id_field;
            fn parse_id(s: &str) -> Result<$id, String> {
                <$id>::parse(s)
            }
            fn change(id: $id, spec: Self) -> CatalogChange {
                CatalogChange::$variant(id, spec)
            }
            fn entries(data: &CatalogData) -> &BTreeMap<$id, Self> {
                &data.$field
            }
        }
    };
}

entry!(
    ResellerSpec,
    ResellerId,
    "reseller",
    "resellers",
    "id",
    PutReseller,
    resellers,
    &[
        ("name", FieldKind::Text),
        ("country", FieldKind::Text),
        ("us_person", FieldKind::Flag)
    ]
);
entry!(
    OrganizationSpec,
    OrgId,
    "organization",
    "organizations",
    "id",
    PutOrganization,
    organizations,
    &[
        ("name", FieldKind::Text),
        ("country", FieldKind::Text),
        ("aliases", FieldKind::Json)
    ]
);
entry!(
    ProductSpec,
    Sku,
    "product",
    "products",
    "sku",
    PutProduct,
    products,
    &[
        ("name", FieldKind::Text),
        ("vendor", FieldKind::Text),
        ("category", FieldKind::Text),
        ("components", FieldKind::Json),
        ("white_label_of", FieldKind::Text)
    ]
);
entry!(
    DesignationSpec,
    DesignationId,
    "designation",
    "designations",
    "id",
    PutDesignation,
    designations,
    &[
        ("title", FieldKind::Text),
        ("authority", FieldKind::Text),
        ("citation", FieldKind::Text),
        ("organizations", FieldKind::Json),
        ("covers_affiliates", FieldKind::Flag),
        ("jurisdiction", FieldKind::Text),
        ("excluded_categories", FieldKind::Json),
        ("rules", FieldKind::Json)
    ]
);

pub(crate) fn render<E: Entry>(id: &E::Id, spec: &E) -> Value {
    let mut value = serde_json::to_value(spec).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert(E::ID_FIELD.to_string(), json!(id.to_string()));
    }
    value
}

/// Issues about the entry being written, by its body fields; if the change
/// broke something elsewhere, those issues, saying where.
fn issues_for(kind: &str, id: &str, issues: Vec<CatalogIssue>) -> ApiError {
    let is_ours = |i: &CatalogIssue| {
        serde_json::to_value(i.entity)
            .ok()
            .and_then(|v| v.as_str().map(|s| s == kind))
            == Some(true)
            && i.id == id
    };
    let ours: Vec<FieldError> = issues
        .iter()
        .filter(|i| is_ours(i))
        .map(|i| FieldError::new(i.field.clone(), i.message.clone()))
        .collect();
    if !ours.is_empty() {
        return ApiError::Validation(ours);
    }
    ApiError::Validation(
        issues
            .into_iter()
            .map(|i| {
                let entity = serde_json::to_value(i.entity)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                FieldError::new(i.field, format!("{entity} {}: {}", i.id, i.message))
            })
            .collect(),
    )
}

/// Makes one change as `actor`: whether it created the entry, or the
/// catalogue's issues with it, by field.
pub(crate) async fn commit(
    state: &State,
    actor: crate::domain::Actor,
    kind: &'static str,
    id: String,
    change: CatalogChange,
) -> Result<bool, ApiError> {
    match state.gate.change_catalog(actor, vec![change]).await {
        Ok(created) => Ok(created.first().copied().unwrap_or(false)),
        Err(crate::store::StoreError::Invalid(issues)) => Err(issues_for(kind, &id, issues)),
        Err(e) => Err(e.into()),
    }
}

/// `201` with the entry when the PUT created it, `200` when it replaced it.
fn put_reply(created: bool, entry: Value) -> HttpResponse {
    let mut response = if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    response.json(entry)
}

pub async fn put<E: Entry>(
    state: State,
    principal: Principal,
    path: web::Path<String>,
    body: PendingBody,
) -> Result<HttpResponse, ApiError> {
    principal.require(WRITERS)?;
    let raw_id = path.into_inner();
    let id = E::parse_id(&raw_id).map_err(|m| ApiError::field(E::ID_FIELD, m))?;
    let spec: E = body.json().await?;
    let created = commit(
        &state,
        principal.actor(),
        E::KIND,
        id.to_string(),
        E::change(id.clone(), spec.clone()),
    )
    .await?;
    Ok(put_reply(created, render(&id, &spec)))
}

pub async fn get<E: Entry>(
    state: State,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(READERS)?;
    let id = E::parse_id(&path.into_inner()).map_err(|_| ApiError::NotFound)?;
    let catalog = state.gate.fresh_catalog().await?;
    let spec = E::entries(catalog.data())
        .get(&id)
        .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(render(&id, spec)))
}

pub async fn list<E: Entry>(state: State, principal: Principal) -> Result<HttpResponse, ApiError> {
    principal.require(READERS)?;
    let catalog = state.gate.fresh_catalog().await?;
    let items: Vec<Value> = E::entries(catalog.data())
        .iter()
        .map(|(id, spec)| render(id, spec))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        E::PLURAL: items,
        "catalog_version": catalog.version().to_string(),
    })))
}

fn relationship_ids(path: (String, String)) -> Result<(OrgId, OrgId), ApiError> {
    let (source, target) = path;
    let mut errors = Vec::new();
    let source = OrgId::parse(&source)
        .map_err(|m| errors.push(FieldError::new("id", m)))
        .ok();
    let target = OrgId::parse(&target)
        .map_err(|m| errors.push(FieldError::new("target", m)))
        .ok();
    match (source, target) {
        (Some(s), Some(t)) => Ok((s, t)),
        _ => Err(ApiError::Validation(errors)),
    }
}

fn render_relationship(source: &OrgId, target: &OrgId, spec: &RelationshipSpec) -> Value {
    json!({"id": source, "target": target, "kind": spec.kind})
}

pub async fn put_relationship(
    state: State,
    principal: Principal,
    path: web::Path<(String, String)>,
    body: PendingBody,
) -> Result<HttpResponse, ApiError> {
    principal.require(WRITERS)?;
    let (source, target) = relationship_ids(path.into_inner())?;
    let spec: RelationshipSpec = body.json().await?;
    let change = CatalogChange::PutRelationship(source.clone(), target.clone(), spec.clone());
    let created = commit(
        &state,
        principal.actor(),
        "relationship",
        format!("{source}/{target}"),
        change,
    )
    .await?;
    Ok(put_reply(
        created,
        render_relationship(&source, &target, &spec),
    ))
}

pub async fn get_relationship(
    state: State,
    principal: Principal,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    principal.require(READERS)?;
    let (source, target) = relationship_ids(path.into_inner()).map_err(|_| ApiError::NotFound)?;
    let catalog = state.gate.fresh_catalog().await?;
    let kind = catalog
        .data()
        .relationships
        .get(&(source.clone(), target.clone()))
        .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(render_relationship(
        &source,
        &target,
        &RelationshipSpec { kind: *kind },
    )))
}

pub async fn delete_relationship(
    state: State,
    principal: Principal,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    principal.require(WRITERS)?;
    let (source, target) = relationship_ids(path.into_inner()).map_err(|_| ApiError::NotFound)?;
    let change = CatalogChange::DeleteRelationship(source.clone(), target.clone());
    commit(
        &state,
        principal.actor(),
        "relationship",
        format!("{source}/{target}"),
        change,
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// The fields of `example` (every optional one given) as stored.
    fn fields_of<E: Entry>(example: Value) -> Vec<String> {
        let spec: E = serde_json::from_value(example).unwrap();
        let mut names: Vec<String> = serde_json::to_value(spec)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    fn listed<E: Entry>() -> Vec<String> {
        let mut names: Vec<String> = E::FIELDS.iter().map(|(n, _)| n.to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_form_lists_every_field_of_its_kind() {
        let seed: Value = serde_json::from_str(include_str!("../store/seed.json")).unwrap();
        let designation = seed["designations"]["us-icts-kaspersky-2024"].clone();
        assert_eq!(
            fields_of::<DesignationSpec>(designation),
            listed::<DesignationSpec>()
        );
        let reseller = json!({"name": "A", "country": "DE", "us_person": false});
        assert_eq!(
            fields_of::<ResellerSpec>(reseller),
            listed::<ResellerSpec>()
        );
        let org = json!({"name": "A", "country": "DE", "aliases": ["B"]});
        assert_eq!(
            fields_of::<OrganizationSpec>(org),
            listed::<OrganizationSpec>()
        );
        let product = json!({"name": "A", "vendor": "a", "category": "vpn",
                             "components": ["B"], "white_label_of": "C"});
        assert_eq!(fields_of::<ProductSpec>(product), listed::<ProductSpec>());
    }
}
