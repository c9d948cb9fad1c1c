//! The pure decision engine: the catalogue model, its validation, the lineage closure, nexus,
//! effective-dated rules and [`decide`].
//!
//! Nothing here does IO or reads a clock: [`Catalog::build`] turns catalogue data into an
//! immutable snapshot (validated, with every designation's reach over the product/organisation
//! graph computed once), and [`decide`] is a pure function of that snapshot, a request and an
//! instant, costing a hash lookup plus a scan of the applicable designations' rules.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::domain::{
    Category, CountryCode, DesignationId, OrgId, Outcome, PartyRole, RelKind, ResellerId, RuleId,
    Sku, Transaction,
};

#[cfg(test)]
mod tests;

/// Longest accepted name, title, authority, citation or alias, in characters.
pub const MAX_TEXT_CHARS: usize = 256;

// ---------------------------------------------------------------------------------------------
// Catalogue entry specs: these are the admin API's request bodies (the id comes from the path).
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Validation issues
// ---------------------------------------------------------------------------------------------

/// The kind of catalogue entry an issue is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    Reseller,
    Organization,
    Relationship,
    Product,
    Designation,
}

impl EntityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Reseller => "reseller",
            EntityKind::Organization => "organization",
            EntityKind::Relationship => "relationship",
            EntityKind::Product => "product",
            EntityKind::Designation => "designation",
        }
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reason a catalogue cannot be built. `field` names the offending field of the entity's
/// request body (`vendor`, `components[1]`, `rules[0].effective_from`, ...); for a relationship
/// `id` is `"source/target"` and `field` is `id` (unknown source), `target` or `kind`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CatalogIssue {
    pub entity: EntityKind,
    pub id: String,
    pub field: String,
    pub message: String,
}

impl fmt::Display for CatalogIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}: {}",
            self.entity, self.id, self.field, self.message
        )
    }
}

struct Issues(Vec<CatalogIssue>);

impl Issues {
    fn push(
        &mut self,
        entity: EntityKind,
        id: impl fmt::Display,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.0.push(CatalogIssue {
            entity,
            id: id.to_string(),
            field: field.into(),
            message: message.into(),
        });
    }

    fn text(&mut self, entity: EntityKind, id: impl fmt::Display, field: &str, value: &str) {
        if value.trim().is_empty() {
            self.push(entity, id, field, "must not be empty");
        } else if value.chars().count() > MAX_TEXT_CHARS {
            self.push(
                entity,
                id,
                field,
                format!("must be at most {MAX_TEXT_CHARS} characters"),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decision types
// ---------------------------------------------------------------------------------------------

/// A party to a transaction, as far as nexus is concerned.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Party {
    pub country: CountryCode,
    /// `None`: not stated by the caller.
    pub us_person: Option<bool>,
}

/// What is asked: may `reseller` do `transaction` of `product` for `customer`?
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Request {
    pub transaction: Transaction,
    pub product: Sku,
    pub customer: Party,
    pub reseller: Party,
}

/// The requested product is not in the catalogue.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown product {0}")]
pub struct UnknownProduct(pub Sku);

/// The engine's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub outcome: Outcome,
    pub reasons: Vec<Reason>,
    /// The instant an allowed term must end by (an `ends_service` rule taking effect later).
    pub not_after: Option<DateTime<Utc>>,
}

/// Why a reason was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// Deny: the product's lineage reaches a designated organisation and a party has nexus.
    DesignatedLineage,
    /// Review: as above, but a party's nexus cannot be decided.
    NexusUnknown,
    /// Allow with `not_after`: an `ends_service` rule takes effect later.
    ServiceEnds,
}

impl ReasonCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::DesignatedLineage => "designated_lineage",
            ReasonCode::NexusUnknown => "nexus_unknown",
            ReasonCode::ServiceEnds => "service_ends",
        }
    }
}

/// One explained reason of a verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    pub code: ReasonCode,
    pub designation: DesignationId,
    pub rule: RuleId,
    pub citation: String,
    /// The rule's instant (its local `effective_from` resolved in its time zone).
    pub effective_from: DateTime<Utc>,
    pub party: PartyRole,
    /// From the requested product to the designated organisation.
    pub path: Vec<PathStep>,
}

/// Whether a path step is a product or an organisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    Product,
    Organization,
}

/// One node of a lineage path; `via` names the edge that led to it (absent on the first step):
/// `vendor`, `component`, `white_label_of`, or a relationship as walked: `subsidiary_of`,
/// `parent_of`, `affiliate_of`, `successor_of`, `predecessor_of`, `assignee_of`, `assignor_of`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PathStep {
    pub kind: NodeKind,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub via: Option<String>,
}

/// Whether a party has the nexus a designation's jurisdiction asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Nexus {
    Yes,
    No,
    Unknown,
}

/// Nexus of `party` with `jurisdiction`. For the US: in the US or a territory, or a U.S. person;
/// unknown when outside and `us_person` was not stated. Elsewhere: the country alone decides
/// (`us_person` speaks only to the US).
pub fn nexus(party: &Party, jurisdiction: &CountryCode) -> Nexus {
    if jurisdiction.as_str() == "US" {
        if party.country.is_us_territory_or_us() {
            return Nexus::Yes;
        }
        match party.us_person {
            Some(true) => Nexus::Yes,
            Some(false) => Nexus::No,
            None => Nexus::Unknown,
        }
    } else if &party.country == jurisdiction {
        Nexus::Yes
    } else {
        Nexus::No
    }
}

/// Resolves a local wall-clock time in `tz` to its single instant; a time in a DST gap or
/// overlap is an error message.
pub fn resolve_local(local: NaiveDateTime, tz: Tz) -> Result<DateTime<Utc>, String> {
    let shown = local.format("%Y-%m-%dT%H:%M:%S");
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Ok(t.with_timezone(&Utc)),
        LocalResult::None => Err(format!("{shown} does not exist in {} (DST gap)", tz.name())),
        LocalResult::Ambiguous(..) => Err(format!(
            "{shown} is ambiguous in {} (DST overlap)",
            tz.name()
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// The catalogue snapshot
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct CompiledRule {
    id: RuleId,
    instant: DateTime<Utc>,
    transactions: Vec<Transaction>,
    ends_service: bool,
}

#[derive(Clone, Debug)]
struct CompiledDesignation {
    id: DesignationId,
    citation: String,
    jurisdiction: CountryCode,
    rules: Vec<CompiledRule>,
}

/// A designation that applies to a product, with the shortest explaining path.
#[derive(Clone, Debug)]
struct Applicable {
    /// Index into `Catalog::designations`.
    designation: usize,
    path: Vec<PathStep>,
}

/// An immutable, validated catalogue snapshot with its lineage closure computed.
#[derive(Clone, Debug)]
pub struct Catalog {
    version: i64,
    data: CatalogData,
    /// In designation-id order.
    designations: Vec<CompiledDesignation>,
    /// Product -> the designations that apply to it (in designation-id order).
    lineage: HashMap<Sku, Vec<Applicable>>,
}

impl Catalog {
    /// Validates `data` and computes, for every (designation, product) pair, whether the
    /// designation applies and its shortest explaining path. On failure returns every issue
    /// found, sorted.
    pub fn build(version: i64, data: CatalogData) -> Result<Catalog, Vec<CatalogIssue>> {
        let mut issues = Issues(Vec::new());
        validate_resellers(&data, &mut issues);
        validate_organizations(&data, &mut issues);
        validate_relationships(&data, &mut issues);
        validate_products(&data, &mut issues);
        let designations = compile_designations(&data, &mut issues);
        let graph = Graph::new(&data);
        report_cycles(&data, &graph, &mut issues);
        if !issues.0.is_empty() {
            let mut issues = issues.0;
            issues.sort();
            issues.dedup();
            return Err(issues);
        }

        let mut lineage: HashMap<Sku, Vec<Applicable>> = HashMap::new();
        for (index, (_, spec)) in data.designations.iter().enumerate() {
            for (sku, path) in graph.reach(spec) {
                lineage.entry(sku).or_default().push(Applicable {
                    designation: index,
                    path,
                });
            }
        }
        Ok(Catalog {
            version,
            data,
            designations,
            lineage,
        })
    }

    /// The catalogue version this snapshot was built from.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// The validated data.
    pub fn data(&self) -> &CatalogData {
        &self.data
    }

    pub fn product(&self, sku: &Sku) -> Option<&ProductSpec> {
        self.data.products.get(sku)
    }

    pub fn reseller(&self, id: &ResellerId) -> Option<&ResellerSpec> {
        self.data.resellers.get(id)
    }

    pub fn organization(&self, id: &OrgId) -> Option<&OrganizationSpec> {
        self.data.organizations.get(id)
    }

    pub fn designation(&self, id: &DesignationId) -> Option<&DesignationSpec> {
        self.data.designations.get(id)
    }

    /// The UTC instant a rule takes effect (its local time resolved in its time zone).
    pub fn rule_instant(&self, d: &DesignationId, rule: &RuleId) -> Option<DateTime<Utc>> {
        let index = self.designation_index(d)?;
        let compiled = self.designations.get(index)?;
        compiled
            .rules
            .iter()
            .find(|r| &r.id == rule)
            .map(|r| r.instant)
    }

    /// The shortest path by which designation `d` applies to `sku`, or `None` when it does not.
    pub fn lineage_path(&self, d: &DesignationId, sku: &Sku) -> Option<&[PathStep]> {
        let index = self.designation_index(d)?;
        self.lineage
            .get(sku)?
            .iter()
            .find(|a| a.designation == index)
            .map(|a| a.path.as_slice())
    }

    fn designation_index(&self, d: &DesignationId) -> Option<usize> {
        self.designations.binary_search_by(|c| c.id.cmp(d)).ok()
    }
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

fn validate_resellers(data: &CatalogData, issues: &mut Issues) {
    for (id, r) in &data.resellers {
        issues.text(EntityKind::Reseller, id, "name", &r.name);
    }
}

fn validate_organizations(data: &CatalogData, issues: &mut Issues) {
    for (id, o) in &data.organizations {
        issues.text(EntityKind::Organization, id, "name", &o.name);
        for (i, alias) in o.aliases.iter().enumerate() {
            issues.text(
                EntityKind::Organization,
                id,
                &format!("aliases[{i}]"),
                alias,
            );
        }
    }
}

fn validate_relationships(data: &CatalogData, issues: &mut Issues) {
    for (source, target) in data.relationships.keys() {
        let id = format!("{source}/{target}");
        if !data.organizations.contains_key(source) {
            issues.push(
                EntityKind::Relationship,
                &id,
                "id",
                format!("unknown organization {source}"),
            );
        }
        if !data.organizations.contains_key(target) {
            issues.push(
                EntityKind::Relationship,
                &id,
                "target",
                format!("unknown organization {target}"),
            );
        }
        if source == target {
            issues.push(
                EntityKind::Relationship,
                &id,
                "target",
                "an organization cannot be related to itself",
            );
        }
    }
}

fn validate_products(data: &CatalogData, issues: &mut Issues) {
    for (sku, p) in &data.products {
        issues.text(EntityKind::Product, sku, "name", &p.name);
        if !data.organizations.contains_key(&p.vendor) {
            issues.push(
                EntityKind::Product,
                sku,
                "vendor",
                format!("unknown organization {}", p.vendor),
            );
        }
        for (i, c) in p.components.iter().enumerate() {
            let field = format!("components[{i}]");
            if c == sku {
                issues.push(
                    EntityKind::Product,
                    sku,
                    field,
                    "a product may not list itself",
                );
            } else if !data.products.contains_key(c) {
                issues.push(
                    EntityKind::Product,
                    sku,
                    field,
                    format!("unknown product {c}"),
                );
            }
        }
        if let Some(w) = &p.white_label_of {
            if w == sku {
                issues.push(
                    EntityKind::Product,
                    sku,
                    "white_label_of",
                    "a product may not list itself",
                );
            } else if !data.products.contains_key(w) {
                issues.push(
                    EntityKind::Product,
                    sku,
                    "white_label_of",
                    format!("unknown product {w}"),
                );
            }
        }
    }
}

fn compile_designations(data: &CatalogData, issues: &mut Issues) -> Vec<CompiledDesignation> {
    let mut compiled = Vec::with_capacity(data.designations.len());
    for (id, d) in &data.designations {
        let kind = EntityKind::Designation;
        issues.text(kind, id, "title", &d.title);
        issues.text(kind, id, "authority", &d.authority);
        issues.text(kind, id, "citation", &d.citation);
        if d.organizations.is_empty() {
            issues.push(
                kind,
                id,
                "organizations",
                "must name at least one organization",
            );
        }
        for (i, org) in d.organizations.iter().enumerate() {
            if !data.organizations.contains_key(org) {
                issues.push(
                    kind,
                    id,
                    format!("organizations[{i}]"),
                    format!("unknown organization {org}"),
                );
            }
        }
        if d.rules.is_empty() {
            issues.push(kind, id, "rules", "must have at least one rule");
        }
        let mut seen = BTreeSet::new();
        let mut rules = Vec::with_capacity(d.rules.len());
        for (i, r) in d.rules.iter().enumerate() {
            if !seen.insert(&r.id) {
                issues.push(
                    kind,
                    id,
                    format!("rules[{i}].id"),
                    format!("duplicate rule id {}", r.id),
                );
            }
            if r.transactions.is_empty() {
                issues.push(
                    kind,
                    id,
                    format!("rules[{i}].transactions"),
                    "must name at least one transaction",
                );
            }
            match resolve_local(r.effective_from, r.time_zone) {
                Ok(instant) => rules.push(CompiledRule {
                    id: r.id.clone(),
                    instant,
                    transactions: r.transactions.clone(),
                    ends_service: r.ends_service,
                }),
                Err(message) => {
                    issues.push(kind, id, format!("rules[{i}].effective_from"), message);
                }
            }
        }
        compiled.push(CompiledDesignation {
            id: id.clone(),
            citation: d.citation.clone(),
            jurisdiction: d.jurisdiction.clone(),
            rules,
        });
    }
    compiled
}

/// Reports every product on a cycle of the graph formed by components and white-label edges
/// (self-references are reported by `validate_products`).
fn report_cycles(data: &CatalogData, graph: &Graph<'_>, issues: &mut Issues) {
    let n = graph.products.len();
    let adjacency: Vec<Vec<usize>> = (0..n)
        .map(|p| {
            graph.forward[p]
                .iter()
                .filter(|e| e.to < n && e.to != p)
                .map(|e| e.to)
                .collect()
        })
        .collect();
    for scc in strongly_connected(&adjacency) {
        if scc.len() < 2 {
            continue;
        }
        let members: BTreeSet<usize> = scc.iter().copied().collect();
        const SHOWN: usize = 8;
        let names: Vec<&str> = members
            .iter()
            .take(SHOWN)
            .map(|&p| graph.products[p].as_str())
            .collect();
        let message = if members.len() > SHOWN {
            format!(
                "forms a cycle among products {}, ... ({} in all)",
                names.join(", "),
                members.len()
            )
        } else {
            format!("forms a cycle among products {}", names.join(", "))
        };
        for &p in &members {
            let sku = graph.products[p];
            let Some(spec) = data.products.get(sku) else {
                continue;
            };
            let in_cycle = |s: &Sku| {
                graph
                    .product_index
                    .get(s)
                    .is_some_and(|i| members.contains(i))
            };
            if spec.components.iter().any(|c| c != sku && in_cycle(c)) {
                issues.push(EntityKind::Product, sku, "components", message.clone());
            }
            if spec
                .white_label_of
                .as_ref()
                .is_some_and(|w| w != sku && in_cycle(w))
            {
                issues.push(EntityKind::Product, sku, "white_label_of", message.clone());
            }
        }
    }
}

/// Tarjan's strongly connected components, iterative (no recursion depth limit).
fn strongly_connected(adjacency: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = adjacency.len();
    let mut index: Vec<Option<usize>> = vec![None; n];
    let mut low = vec![0usize; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<usize> = Vec::new();
    let mut next_index = 0usize;
    let mut components = Vec::new();
    for start in 0..n {
        if index[start].is_some() {
            continue;
        }
        let mut calls: Vec<(usize, usize)> = vec![(start, 0)];
        index[start] = Some(next_index);
        low[start] = next_index;
        next_index += 1;
        stack.push(start);
        on_stack[start] = true;
        while let Some(&(v, edge)) = calls.last() {
            if let Some(&w) = adjacency[v].get(edge) {
                if let Some(top) = calls.last_mut() {
                    top.1 += 1;
                }
                match index[w] {
                    None => {
                        index[w] = Some(next_index);
                        low[w] = next_index;
                        next_index += 1;
                        stack.push(w);
                        on_stack[w] = true;
                        calls.push((w, 0));
                    }
                    Some(iw) if on_stack[w] => low[v] = low[v].min(iw),
                    Some(_) => {}
                }
                continue;
            }
            calls.pop();
            if let Some(&(parent, _)) = calls.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if Some(low[v]) == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                components.push(component);
            }
        }
    }
    components
}

// ---------------------------------------------------------------------------------------------
// The lineage graph and closure
// ---------------------------------------------------------------------------------------------

/// An edge in the lineage direction (product -> what it is made of / by; org -> org).
#[derive(Clone, Copy, Debug)]
struct Edge {
    to: usize,
    via: &'static str,
    /// An org-to-org relationship step (followed only when a designation covers affiliates).
    relation: bool,
}

/// The product/organisation graph, nodes numbered products first (in SKU order), then
/// organisations (in id order), so node order is a deterministic tie-breaker.
struct Graph<'a> {
    products: Vec<&'a Sku>,
    orgs: Vec<&'a OrgId>,
    categories: Vec<&'a Category>,
    product_index: HashMap<&'a Sku, usize>,
    forward: Vec<Vec<Edge>>,
    reverse: Vec<Vec<Edge>>,
}

fn walked_labels(kind: RelKind) -> Option<(&'static str, &'static str)> {
    match kind {
        RelKind::SubsidiaryOf => Some(("subsidiary_of", "parent_of")),
        RelKind::AffiliateOf => Some(("affiliate_of", "affiliate_of")),
        RelKind::SuccessorOf => Some(("successor_of", "predecessor_of")),
        RelKind::AssigneeOf => Some(("assignee_of", "assignor_of")),
        RelKind::MinorityOwnedBy => None,
    }
}

impl<'a> Graph<'a> {
    /// Builds the graph, silently skipping references to unknown entries (validation reports
    /// them).
    fn new(data: &'a CatalogData) -> Self {
        let products: Vec<&Sku> = data.products.keys().collect();
        let orgs: Vec<&OrgId> = data.organizations.keys().collect();
        let categories = data.products.values().map(|p| &p.category).collect();
        let product_index: HashMap<&Sku, usize> =
            products.iter().enumerate().map(|(i, s)| (*s, i)).collect();
        let p = products.len();
        let org_index: HashMap<&OrgId, usize> =
            orgs.iter().enumerate().map(|(i, o)| (*o, p + i)).collect();
        let n = p + orgs.len();
        let mut forward: Vec<Vec<Edge>> = vec![Vec::new(); n];
        let mut add = |from: usize, to: usize, via: &'static str, relation: bool| {
            forward[from].push(Edge { to, via, relation });
        };
        for (i, spec) in data.products.values().enumerate() {
            if let Some(&v) = org_index.get(&spec.vendor) {
                add(i, v, "vendor", false);
            }
            for c in &spec.components {
                if let Some(&to) = product_index.get(c) {
                    add(i, to, "component", false);
                }
            }
            if let Some(&to) = spec
                .white_label_of
                .as_ref()
                .and_then(|w| product_index.get(w))
            {
                add(i, to, "white_label_of", false);
            }
        }
        for ((source, target), kind) in &data.relationships {
            let (Some(&s), Some(&t)) = (org_index.get(source), org_index.get(target)) else {
                continue;
            };
            if s == t {
                continue;
            }
            if let Some((ahead, back)) = walked_labels(*kind) {
                add(s, t, ahead, true);
                add(t, s, back, true);
            }
        }
        let mut reverse: Vec<Vec<Edge>> = vec![Vec::new(); n];
        for (from, edges) in forward.iter().enumerate() {
            for e in edges {
                reverse[e.to].push(Edge {
                    to: from,
                    via: e.via,
                    relation: e.relation,
                });
            }
        }
        Graph {
            products,
            orgs,
            categories,
            product_index,
            forward,
            reverse,
        }
    }

    fn step(&self, node: usize, via: Option<&'static str>) -> PathStep {
        let p = self.products.len();
        let (kind, id) = match node.checked_sub(p) {
            None => (NodeKind::Product, self.products[node].as_str()),
            Some(o) => (NodeKind::Organization, self.orgs[o].as_str()),
        };
        PathStep {
            kind,
            id: id.to_owned(),
            via: via.map(str::to_owned),
        }
    }

    /// Every product `d` applies to, with its shortest path to a listed organisation: one
    /// breadth-first search from the listed organisations over reversed edges, never entering a
    /// product of an excluded category nor (unless `covers_affiliates`) a relationship edge.
    /// Ties between equally short paths go to the smallest next node, then the smallest label.
    fn reach(&self, d: &DesignationSpec) -> Vec<(Sku, Vec<PathStep>)> {
        let p = self.products.len();
        let n = self.forward.len();
        let excluded: BTreeSet<&Category> = d.excluded_categories.iter().collect();
        let blocked = |node: usize| node < p && excluded.contains(self.categories[node]);
        let usable = |e: &Edge| d.covers_affiliates || !e.relation;

        let mut dist: Vec<Option<usize>> = vec![None; n];
        let mut queue = VecDeque::new();
        for org in &d.organizations {
            if let Some(i) = self.orgs.binary_search(&org).ok().map(|i| p + i) {
                if dist[i].is_none() {
                    dist[i] = Some(0);
                    queue.push_back(i);
                }
            }
        }
        while let Some(x) = queue.pop_front() {
            let next = dist[x].map_or(0, |k| k + 1);
            for e in self.reverse[x].iter().filter(|e| usable(e)) {
                if dist[e.to].is_none() && !blocked(e.to) {
                    dist[e.to] = Some(next);
                    queue.push_back(e.to);
                }
            }
        }

        let hop: Vec<Option<(usize, &'static str)>> = (0..n)
            .map(|y| {
                let dy = dist[y].filter(|&k| k > 0)?;
                self.forward[y]
                    .iter()
                    .filter(|e| usable(e) && dist[e.to].is_some_and(|k| k + 1 == dy))
                    .map(|e| (e.to, e.via))
                    .min()
            })
            .collect();

        let mut out = Vec::new();
        for (start, sku) in self.products.iter().enumerate() {
            if dist[start].is_none() {
                continue;
            }
            let mut path = vec![self.step(start, None)];
            let mut node = start;
            // Each hop strictly lowers the distance, so this ends at a listed organisation.
            while let Some((to, via)) = hop[node] {
                path.push(self.step(to, Some(via)));
                node = to;
            }
            out.push(((*sku).clone(), path));
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Decision
// ---------------------------------------------------------------------------------------------

/// Decides `req` against `catalog` at instant `at`. Pure: lookups plus rule checks.
pub fn decide(
    catalog: &Catalog,
    req: &Request,
    at: DateTime<Utc>,
) -> Result<Verdict, UnknownProduct> {
    if !catalog.data.products.contains_key(&req.product) {
        return Err(UnknownProduct(req.product.clone()));
    }
    let applicable = catalog
        .lineage
        .get(&req.product)
        .map(Vec::as_slice)
        .unwrap_or_default();

    let mut denials = Vec::new();
    let mut unknowns = Vec::new();
    let mut endings = Vec::new();
    let mut not_after: Option<DateTime<Utc>> = None;

    for a in applicable {
        let Some(d) = catalog.designations.get(a.designation) else {
            continue;
        };
        // The in-effect rule covering this transaction with the latest instant (ties: smallest id).
        let in_effect = d
            .rules
            .iter()
            .filter(|r| r.instant <= at && r.transactions.contains(&req.transaction))
            .max_by(|x, y| x.instant.cmp(&y.instant).then_with(|| y.id.cmp(&x.id)));
        // The earliest service-ending rule still to come (ties: smallest id).
        let ending = d
            .rules
            .iter()
            .filter(|r| r.ends_service && r.instant > at)
            .min_by(|x, y| (x.instant, &x.id).cmp(&(y.instant, &y.id)));
        let reason = |code: ReasonCode, rule: &CompiledRule, party: PartyRole| Reason {
            code,
            designation: d.id.clone(),
            rule: rule.id.clone(),
            citation: d.citation.clone(),
            effective_from: rule.instant,
            party,
            path: a.path.clone(),
        };
        for (role, party) in [
            (PartyRole::Customer, &req.customer),
            (PartyRole::Reseller, &req.reseller),
        ] {
            match nexus(party, &d.jurisdiction) {
                Nexus::Yes => {
                    if let Some(rule) = in_effect {
                        denials.push(reason(ReasonCode::DesignatedLineage, rule, role));
                    }
                    if let Some(rule) = ending {
                        endings.push(reason(ReasonCode::ServiceEnds, rule, role));
                        not_after = Some(not_after.map_or(rule.instant, |t| t.min(rule.instant)));
                    }
                }
                Nexus::Unknown => {
                    if let Some(rule) = in_effect {
                        unknowns.push(reason(ReasonCode::NexusUnknown, rule, role));
                    }
                }
                Nexus::No => {}
            }
        }
    }

    let (outcome, mut reasons, not_after) = if !denials.is_empty() {
        (Outcome::Deny, denials, None)
    } else if !unknowns.is_empty() {
        unknowns.extend(endings);
        (Outcome::Review, unknowns, not_after)
    } else {
        (Outcome::Allow, endings, not_after)
    };
    reasons.sort_by(|x, y| {
        (&x.designation, x.party, x.code, &x.rule).cmp(&(&y.designation, y.party, y.code, &y.rule))
    });
    Ok(Verdict {
        outcome,
        reasons,
        not_after,
    })
}
