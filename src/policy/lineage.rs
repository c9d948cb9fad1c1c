//! The lineage graph and closure: the product/organisation graph, each designation's reach over
//! it by breadth-first search, and the shortest paths ([`LineagePath`] of [`PathStep`]s) that
//! explain why a designation applies to a product.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::issues::{EntityKind, Issues};
use super::spec::{CatalogData, DesignationSpec};
use crate::domain::{Category, OrgId, RelKind, Sku};

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

/// A lineage path, from a product to a designated organisation: the steps of a
/// [`Reason`](super::Reason)'s `path`. Computed once when the catalogue is built and shared by
/// every reason citing it, so a decision copies a pointer rather than the steps. It reads as a
/// slice of [`PathStep`]s (and compares equal to a `Vec` of the same steps); in JSON it is the
/// array of its steps.
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

/// An edge's label as walked. Declared in the lexicographic order of the names, so comparing
/// labels compares names (the tie-breaker between equally short paths).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Label {
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
    pub(super) const ALL: [Label; 8] = [
        Label::AffiliateOf,
        Label::AssigneeOf,
        Label::Component,
        Label::ParentOf,
        Label::SubsidiaryOf,
        Label::SuccessorOf,
        Label::Vendor,
        Label::WhiteLabelOf,
    ];

    pub(super) fn as_str(self) -> &'static str {
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
pub(super) struct Edge {
    pub(super) to: usize,
    label: Label,
}

/// Adjacency lists packed in one array: node `x`'s edges are `edges[start[x]..start[x + 1]]`,
/// in the order they were given.
pub(super) struct Adjacency {
    start: Vec<usize>,
    edges: Vec<Edge>,
}

impl Adjacency {
    /// From `(from, edge)` pairs over nodes `0..n`; `pairs` is walked twice (count, then place).
    pub(super) fn new<I: Iterator<Item = (usize, Edge)>>(n: usize, pairs: impl Fn() -> I) -> Self {
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
    pub(super) fn len(&self) -> usize {
        self.start.len() - 1
    }

    pub(super) fn of(&self, node: usize) -> &[Edge] {
        &self.edges[self.start[node]..self.start[node + 1]]
    }
}

/// The product/organisation graph, nodes numbered products first (in SKU order), then
/// organisations (in id order), so node order is a deterministic tie-breaker.
pub(super) struct Graph<'a> {
    pub(super) products: Vec<&'a Sku>,
    orgs: Vec<&'a OrgId>,
    categories: Vec<&'a Category>,
    pub(super) product_index: HashMap<&'a str, usize>,
    pub(super) forward: Adjacency,
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
pub(super) struct Scratch {
    /// Distance to a listed organisation, [`UNREACHED`] when none.
    dist: Vec<usize>,
    /// The nodes reached, in breadth-first order (also the queue).
    order: Vec<usize>,
}

const UNREACHED: usize = usize::MAX;

impl Scratch {
    pub(super) fn new(nodes: usize) -> Self {
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
    pub(super) fn new(data: &'a CatalogData, issues: &mut Issues) -> Self {
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
    pub(super) fn reach(
        &self,
        d: &DesignationSpec,
        scratch: &mut Scratch,
    ) -> Vec<(usize, LineagePath)> {
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
