//! Catalogue entry specs: the admin API's request bodies (the id comes from the path), and
//! [`CatalogData`], everything the catalogue holds.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::domain::{
    Category, CountryCode, DesignationId, OrgId, RelKind, ResellerId, RuleId, Sku, Transaction,
};

/// `PUT /v1/resellers/{id}`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResellerSpec {
    pub name: String,
    pub country: CountryCode,
    pub us_person: bool,
}

/// `PUT /v1/organizations/{id}`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganizationSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<CountryCode>,
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// `PUT /v1/organizations/{id}/relationships/{target}`: `kind` says what `{id}` is to `{target}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelationshipSpec {
    pub kind: RelKind,
}

/// `PUT /v1/products/{sku}`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductSpec {
    pub name: String,
    pub vendor: OrgId,
    pub category: Category,
    #[serde(default)]
    pub components: Vec<Sku>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub white_label_of: Option<Sku>,
}

/// `PUT /v1/designations/{id}`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesignationSpec {
    pub title: String,
    pub authority: String,
    pub citation: String,
    pub organizations: Vec<OrgId>,
    pub covers_affiliates: bool,
    pub jurisdiction: CountryCode,
    /// Carved-out product categories: the designation does not apply along a path whose
    /// supplied product (the last one, whose vendor is the covered organisation) is of one of
    /// them; a product of any category that embeds or white-labels a covered one is covered.
    #[serde(default)]
    pub excluded_categories: Vec<Category>,
    pub rules: Vec<RuleSpec>,
}

/// One effective-dated rule of a designation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: RuleId,
    pub transactions: Vec<Transaction>,
    /// Local wall-clock time in `time_zone`, e.g. `"2024-07-20T00:00:00"`.
    pub effective_from: NaiveDateTime,
    /// IANA time zone name, e.g. `"America/New_York"`.
    #[serde(with = "tz_name")]
    pub time_zone: Tz,
    #[serde(default)]
    pub ends_service: bool,
}

/// Serde for [`Tz`] as its IANA name, with a readable error for an unknown zone.
mod tz_name {
    use chrono_tz::Tz;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(tz: &Tz, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(tz.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Tz, D::Error> {
        let name = String::deserialize(d)?;
        name.parse::<Tz>()
            .map_err(|_| D::Error::custom(format!("unknown IANA time zone {name:?}")))
    }
}

/// Everything the catalogue holds, keyed by id. Sorted maps keep every derived result
/// independent of the order entries were inserted in.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CatalogData {
    pub resellers: BTreeMap<ResellerId, ResellerSpec>,
    pub organizations: BTreeMap<OrgId, OrganizationSpec>,
    /// `(source, target) -> kind`: "source is `kind` of target".
    pub relationships: BTreeMap<(OrgId, OrgId), RelKind>,
    pub products: BTreeMap<Sku, ProductSpec>,
    pub designations: BTreeMap<DesignationId, DesignationSpec>,
}
