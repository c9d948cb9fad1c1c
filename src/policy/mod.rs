//! The pure decision engine: the catalogue model, its validation, the lineage closure, nexus,
//! effective-dated rules and [`decide`].
//!
//! Nothing here does IO or reads a clock: [`Catalog::build`] turns catalogue data into an
//! immutable snapshot (validated, with every designation's reach over the product/organisation
//! graph computed once), and [`decide`] is a pure function of that snapshot, a request and an
//! instant, costing a hash lookup plus a scan of the applicable designations' rules.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::domain::{
    Category, CountryCode, DesignationId, OrgId, Outcome, PartyRole, RelKind, ResellerId, RuleId,
    Sku, Transaction,
};

mod change;
mod record;
pub use change::CatalogChange;
#[cfg(test)]
mod tests;

pub use record::{Constraints, Decision};

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
    /// The instant an allowed term must end by (an `ends_service` rule taking effect later for a
    /// party with a nexus or one whose nexus cannot be decided).
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
    /// Allow (or review) with `not_after`: an `ends_service` rule takes effect later for a
    /// party with a nexus or one whose nexus cannot be decided.
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
    pub path: LineagePath,
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
/// `parent_of`, `affiliate_of`, `successor_of`, `assignee_of`. Succession is walked one way
/// only, from the successor or assignee to the covered organisation, so there is no
/// `predecessor_of` or `assignor_of` step.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PathStep {
    pub kind: NodeKind,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub via: Option<String>,
}

/// A lineage path, from a product to a designated organisation: the steps of a [`Reason`]'s
/// `path`. Computed once when the catalogue is built and shared by every reason citing it, so
/// a decision copies a pointer rather than the steps. It reads as a slice of [`PathStep`]s
/// (and compares equal to a `Vec` of the same steps); in JSON it is the array of its steps.
#[derive(Clone, PartialEq, Eq)]
pub struct LineagePath(Arc<[PathStep]>);

impl LineagePath {
    /// The steps, from the product to the designated organisation.
    pub fn steps(&self) -> &[PathStep] {
        &self.0
    }
}

impl Deref for LineagePath {
    type Target = [PathStep];

    fn deref(&self) -> &[PathStep] {
        &self.0
    }
}

impl<'a> IntoIterator for &'a LineagePath {
    type Item = &'a PathStep;
    type IntoIter = std::slice::Iter<'a, PathStep>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl From<Vec<PathStep>> for LineagePath {
    fn from(steps: Vec<PathStep>) -> Self {
        LineagePath(steps.into())
    }
}

impl PartialEq<Vec<PathStep>> for LineagePath {
    fn eq(&self, other: &Vec<PathStep>) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<LineagePath> for Vec<PathStep> {
    fn eq(&self, other: &LineagePath) -> bool {
        **self == *other.0
    }
}

/// Formats as the list of steps, like the `Vec<PathStep>` it replaces.
impl fmt::Debug for LineagePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// The array of steps, exactly as a `Vec<PathStep>` serialises.
impl Serialize for LineagePath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for LineagePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<PathStep>::deserialize(d).map(LineagePath::from)
    }
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
    path: LineagePath,
}

/// An immutable, validated catalogue snapshot with its lineage closure computed.
#[derive(Clone, Debug)]
pub struct Catalog {
    version: i64,
    data: CatalogData,
    /// In designation-id order.
    designations: Vec<CompiledDesignation>,
    /// Every product -> the designations that apply to it (in designation-id order; empty when
    /// none does), so [`decide`] finds a product and its lineage with one hash lookup.
    lineage: HashMap<Box<str>, Box<[Applicable]>>,
}

impl Catalog {
    /// Validates `data` and computes, for every (designation, product) pair, whether the
    /// designation applies and its shortest explaining path. On failure returns every issue
    /// found, sorted.
    pub fn build(version: i64, data: CatalogData) -> Result<Catalog, Vec<CatalogIssue>> {
        let mut issues = Issues(Vec::new());
        validate_resellers(&data, &mut issues);
        validate_organizations(&data, &mut issues);
        validate_products(&data, &mut issues);
        let designations = compile_designations(&data, &mut issues);
        let graph = Graph::new(&data, &mut issues);
        report_cycles(&data, &graph, &mut issues);
        if !issues.0.is_empty() {
            let mut issues = issues.0;
            issues.sort();
            issues.dedup();
            return Err(issues);
        }

        let mut applicable: Vec<Vec<Applicable>> = vec![Vec::new(); graph.products.len()];
        let mut scratch = Scratch::new(graph.forward.len());
        for (index, (_, spec)) in data.designations.iter().enumerate() {
            for (product, path) in graph.reach(spec, &mut scratch) {
                applicable[product].push(Applicable {
                    designation: index,
                    path,
                });
            }
        }
        let lineage: HashMap<Box<str>, Box<[Applicable]>> = graph
            .products
            .iter()
            .zip(applicable)
            .map(|(sku, a)| (Box::from(sku.as_str()), a.into_boxed_slice()))
            .collect();
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
            .get(sku.as_str())?
            .iter()
            .find(|a| a.designation == index)
            .map(|a| a.path.steps())
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

/// Product names; references (vendor, components, white label) are resolved, and unknown or
/// self-references reported, by [`Graph::new`], as are relationships.
fn validate_products(data: &CatalogData, issues: &mut Issues) {
    for (sku, p) in &data.products {
        issues.text(EntityKind::Product, sku, "name", &p.name);
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
/// (self-references are reported by `Graph::new`).
fn report_cycles(data: &CatalogData, graph: &Graph<'_>, issues: &mut Issues) {
    let n = graph.products.len();
    let within = Adjacency::new(n, || {
        (0..n).flat_map(move |p| {
            graph
                .forward
                .of(p)
                .iter()
                .filter(move |e| e.to < n && e.to != p)
                .map(move |e| (p, *e))
        })
    });
    for scc in cycles(&within) {
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
                    .get(s.as_str())
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

/// The strongly connected components of more than one node (Tarjan's algorithm, iterative: no
/// recursion depth limit).
fn cycles(adjacency: &Adjacency) -> Vec<Vec<usize>> {
    let n = adjacency.len();
    let mut index: Vec<Option<usize>> = vec![None; n];
    let mut low = vec![0usize; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<usize> = Vec::new();
    let mut next_index = 0usize;
    let mut components = Vec::new();
    let mut calls: Vec<(usize, usize)> = Vec::new();
    for start in 0..n {
        if index[start].is_some() {
            continue;
        }
        calls.push((start, 0));
        index[start] = Some(next_index);
        low[start] = next_index;
        next_index += 1;
        stack.push(start);
        on_stack[start] = true;
        while let Some(&(v, edge)) = calls.last() {
            if let Some(w) = adjacency.of(v).get(edge).map(|e| e.to) {
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
                // A lone node (the usual case) is popped without allocating.
                if stack.last() == Some(&v) {
                    stack.pop();
                    on_stack[v] = false;
                    continue;
                }
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

/// An edge's label as walked. Declared in the lexicographic order of the names, so comparing
/// labels compares names (the tie-breaker between equally short paths).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Label {
    AffiliateOf,
    AssigneeOf,
    Component,
    ParentOf,
    SubsidiaryOf,
    SuccessorOf,
    Vendor,
    WhiteLabelOf,
}

impl Label {
    #[cfg(test)]
    const ALL: [Label; 8] = [
        Label::AffiliateOf,
        Label::AssigneeOf,
        Label::Component,
        Label::ParentOf,
        Label::SubsidiaryOf,
        Label::SuccessorOf,
        Label::Vendor,
        Label::WhiteLabelOf,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Label::AffiliateOf => "affiliate_of",
            Label::AssigneeOf => "assignee_of",
            Label::Component => "component",
            Label::ParentOf => "parent_of",
            Label::SubsidiaryOf => "subsidiary_of",
            Label::SuccessorOf => "successor_of",
            Label::Vendor => "vendor",
            Label::WhiteLabelOf => "white_label_of",
        }
    }

    /// An org-to-org relationship step (followed only when a designation covers affiliates).
    fn is_relation(self) -> bool {
        !matches!(self, Label::Vendor | Label::Component | Label::WhiteLabelOf)
    }
}

/// An edge in the lineage direction (product -> what it is made of / by; org -> org).
#[derive(Clone, Copy, Debug)]
struct Edge {
    to: usize,
    label: Label,
}

/// Adjacency lists packed in one array: node `x`'s edges are `edges[start[x]..start[x + 1]]`,
/// in the order they were given.
struct Adjacency {
    start: Vec<usize>,
    edges: Vec<Edge>,
}

impl Adjacency {
    /// From `(from, edge)` pairs over nodes `0..n`; `pairs` is walked twice (count, then place).
    fn new<I: Iterator<Item = (usize, Edge)>>(n: usize, pairs: impl Fn() -> I) -> Self {
        let mut start = vec![0usize; n + 1];
        for (from, _) in pairs() {
            start[from + 1] += 1;
        }
        for x in 0..n {
            start[x + 1] += start[x];
        }
        let mut next = start.clone();
        let mut edges = vec![
            Edge {
                to: 0,
                label: Label::Vendor,
            };
            start[n]
        ];
        for (from, e) in pairs() {
            edges[next[from]] = e;
            next[from] += 1;
        }
        Adjacency { start, edges }
    }

    /// The number of nodes.
    fn len(&self) -> usize {
        self.start.len() - 1
    }

    fn of(&self, node: usize) -> &[Edge] {
        &self.edges[self.start[node]..self.start[node + 1]]
    }
}

/// The product/organisation graph, nodes numbered products first (in SKU order), then
/// organisations (in id order), so node order is a deterministic tie-breaker.
struct Graph<'a> {
    products: Vec<&'a Sku>,
    orgs: Vec<&'a OrgId>,
    categories: Vec<&'a Category>,
    product_index: HashMap<&'a str, usize>,
    forward: Adjacency,
    reverse: Adjacency,
}

/// The lineage edges a relationship `source kind target` adds: `source -> target` labelled
/// `ahead` (the source is covered when the target is), and, when `back` is given,
/// `target -> source` labelled `back`. Group kinds carry both ways (parents, subsidiaries and
/// affiliates of a covered organisation are covered); succession kinds only to the successor
/// or assignee, never to the predecessor or assignor; a minority stake not at all.
fn walked_labels(kind: RelKind) -> Option<(Label, Option<Label>)> {
    match kind {
        RelKind::SubsidiaryOf => Some((Label::SubsidiaryOf, Some(Label::ParentOf))),
        RelKind::AffiliateOf => Some((Label::AffiliateOf, Some(Label::AffiliateOf))),
        RelKind::SuccessorOf => Some((Label::SuccessorOf, None)),
        RelKind::AssigneeOf => Some((Label::AssigneeOf, None)),
        RelKind::MinorityOwnedBy => None,
    }
}

/// Scratch space for [`Graph::reach`], reused from one designation to the next.
struct Scratch {
    /// Distance to a listed organisation, [`UNREACHED`] when none.
    dist: Vec<usize>,
    /// The nodes reached, in breadth-first order (also the queue).
    order: Vec<usize>,
}

const UNREACHED: usize = usize::MAX;

impl Scratch {
    fn new(nodes: usize) -> Self {
        Scratch {
            dist: vec![UNREACHED; nodes],
            order: Vec::new(),
        }
    }
}

impl<'a> Graph<'a> {
    /// Builds the graph, resolving every reference once: a product's vendor, components and
    /// white label, and both ends of a relationship. A reference to an unknown entry, and a
    /// product's or an organisation's to itself, is reported to `issues` and left out.
    fn new(data: &'a CatalogData, issues: &mut Issues) -> Self {
        let products: Vec<&Sku> = data.products.keys().collect();
        let orgs: Vec<&OrgId> = data.organizations.keys().collect();
        let categories = data.products.values().map(|p| &p.category).collect();
        let product_index: HashMap<&str, usize> = products
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();
        let p = products.len();
        let org_index: HashMap<&str, usize> = orgs
            .iter()
            .enumerate()
            .map(|(i, o)| (o.as_str(), p + i))
            .collect();
        let n = p + orgs.len();

        let mut pairs: Vec<(usize, Edge)> = Vec::new();
        let mut add = |from: usize, to: usize, label: Label| pairs.push((from, Edge { to, label }));
        let kind = EntityKind::Product;
        for (i, (sku, spec)) in data.products.iter().enumerate() {
            match org_index.get(spec.vendor.as_str()) {
                Some(&v) => add(i, v, Label::Vendor),
                None => issues.push(
                    kind,
                    sku,
                    "vendor",
                    format!("unknown organization {}", spec.vendor),
                ),
            }
            for (k, c) in spec.components.iter().enumerate() {
                match product_index.get(c.as_str()) {
                    Some(&to) if to != i => add(i, to, Label::Component),
                    Some(_) => issues.push(
                        kind,
                        sku,
                        format!("components[{k}]"),
                        "a product may not list itself",
                    ),
                    None => issues.push(
                        kind,
                        sku,
                        format!("components[{k}]"),
                        format!("unknown product {c}"),
                    ),
                }
            }
            if let Some(w) = &spec.white_label_of {
                match product_index.get(w.as_str()) {
                    Some(&to) if to != i => add(i, to, Label::WhiteLabelOf),
                    Some(_) => {
                        issues.push(kind, sku, "white_label_of", "a product may not list itself")
                    }
                    None => {
                        issues.push(kind, sku, "white_label_of", format!("unknown product {w}"))
                    }
                }
            }
        }
        let kind = EntityKind::Relationship;
        for ((source, target), rel) in &data.relationships {
            let id = || format!("{source}/{target}");
            let s = org_index.get(source.as_str()).copied();
            let t = org_index.get(target.as_str()).copied();
            if s.is_none() {
                issues.push(kind, id(), "id", format!("unknown organization {source}"));
            }
            if t.is_none() {
                issues.push(
                    kind,
                    id(),
                    "target",
                    format!("unknown organization {target}"),
                );
            }
            if source == target {
                issues.push(
                    kind,
                    id(),
                    "target",
                    "an organization cannot be related to itself",
                );
            }
            let (Some(s), Some(t)) = (s, t) else {
                continue;
            };
            if s == t {
                continue;
            }
            if let Some((ahead, back)) = walked_labels(*rel) {
                add(s, t, ahead);
                if let Some(back) = back {
                    add(t, s, back);
                }
            }
        }

        let forward = Adjacency::new(n, || pairs.iter().copied());
        drop(pairs);
        let reverse = Adjacency::new(n, || {
            (0..n).flat_map(|from| {
                forward.of(from).iter().map(move |e| {
                    (
                        e.to,
                        Edge {
                            to: from,
                            label: e.label,
                        },
                    )
                })
            })
        });
        Graph {
            products,
            orgs,
            categories,
            product_index,
            forward,
            reverse,
        }
    }

    fn step(&self, node: usize, via: Option<Label>) -> PathStep {
        let p = self.products.len();
        let (kind, id) = match node.checked_sub(p) {
            None => (NodeKind::Product, self.products[node].as_str()),
            Some(o) => (NodeKind::Organization, self.orgs[o].as_str()),
        };
        PathStep {
            kind,
            id: id.to_owned(),
            via: via.map(|l| l.as_str().to_owned()),
        }
    }

    /// Every product `d` applies to (by index), with its shortest path to a listed
    /// organisation: one breadth-first search from the listed organisations over reversed
    /// edges. An edge is usable unless it is a relationship step of a designation that does not
    /// `covers_affiliates`, or the `vendor` edge out of a product of an excluded category: a
    /// carve-out shelters the supplied product (the last product on a path, whose vendor edge
    /// leads to the organisations), so a product of an excluded category is still passed
    /// through by its component and white-label edges, and a product of any category that
    /// embeds or white-labels a covered one is covered. Paths are shortest over the usable
    /// edges; ties between equally short paths go to the smallest next node, then the
    /// smallest label.
    fn reach(&self, d: &DesignationSpec, scratch: &mut Scratch) -> Vec<(usize, LineagePath)> {
        let p = self.products.len();
        let excluded: BTreeSet<&Category> = d.excluded_categories.iter().collect();
        // Whether the edge `from -> (label) -> ...` (in the lineage direction) may be walked.
        let usable = |from: usize, label: Label| {
            if label.is_relation() {
                d.covers_affiliates
            } else {
                label != Label::Vendor || !(from < p && excluded.contains(self.categories[from]))
            }
        };

        let Scratch { dist, order } = scratch;
        for &x in order.iter() {
            dist[x] = UNREACHED;
        }
        order.clear();
        for org in &d.organizations {
            if let Some(i) = self.orgs.binary_search(&org).ok().map(|i| p + i) {
                if dist[i] == UNREACHED {
                    dist[i] = 0;
                    order.push(i);
                }
            }
        }
        let mut head = 0;
        while let Some(&x) = order.get(head) {
            head += 1;
            let next = dist[x] + 1;
            // A reversed edge leads back to the node it comes from in the lineage direction.
            for e in self.reverse.of(x).iter().filter(|e| usable(e.to, e.label)) {
                if dist[e.to] == UNREACHED {
                    dist[e.to] = next;
                    order.push(e.to);
                }
            }
        }

        let dist: &[usize] = dist;
        // The next step from a reached node towards a listed organisation, over the same usable
        // edges as the search (so a path never leaves a carved-out product by its vendor).
        let hop = |y: usize| -> Option<(usize, Label)> {
            let dy = dist[y];
            if dy == 0 || dy == UNREACHED {
                return None;
            }
            self.forward
                .of(y)
                .iter()
                .filter(|e| usable(y, e.label) && dist[e.to] != UNREACHED && dist[e.to] + 1 == dy)
                .map(|e| (e.to, e.label))
                .min()
        };
        let mut out = Vec::new();
        for &start in order.iter().filter(|&&x| x < p) {
            let mut path = Vec::with_capacity(dist[start] + 1);
            path.push(self.step(start, None));
            let mut node = start;
            // Each hop strictly lowers the distance, so this ends at a listed organisation.
            while let Some((to, label)) = hop(node) {
                path.push(self.step(to, Some(label)));
                node = to;
            }
            out.push((start, LineagePath::from(path)));
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Decision
// ---------------------------------------------------------------------------------------------

/// Decides `req` against `catalog` at instant `at`. Pure: one hash lookup plus rule checks;
/// a reason shares its path with the snapshot rather than copying it.
///
/// For each designation that applies and each party: with a nexus, a rule in effect for the
/// transaction denies; with a nexus that cannot be decided, it sends to review; and with
/// either, an `ends_service` rule still ahead caps the term (`service_ends`, `not_after`).
pub fn decide(
    catalog: &Catalog,
    req: &Request,
    at: DateTime<Utc>,
) -> Result<Verdict, UnknownProduct> {
    let Some(applicable) = catalog.lineage.get(req.product.as_str()) else {
        return Err(UnknownProduct(req.product.clone()));
    };

    let mut denials = Vec::new();
    let mut unknowns = Vec::new();
    let mut endings = Vec::new();
    let mut not_after: Option<DateTime<Utc>> = None;

    for a in applicable.iter() {
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
                }
                Nexus::Unknown => {
                    if let Some(rule) = in_effect {
                        unknowns.push(reason(ReasonCode::NexusUnknown, rule, role));
                    }
                }
                Nexus::No => continue,
            }
            // A party with a nexus, or whose nexus cannot be decided, may not be served past a
            // service end still ahead: the service cannot know it may (attesting
            // `us_person: false` makes the nexus `No` and lifts the cap).
            if let Some(rule) = ending {
                endings.push(reason(ReasonCode::ServiceEnds, rule, role));
                not_after = Some(not_after.map_or(rule.instant, |t| t.min(rule.instant)));
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
