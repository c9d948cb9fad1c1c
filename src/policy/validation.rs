//! Validation: the checks [`Catalog::build`](super::Catalog::build) runs before it computes the
//! lineage closure: text fields, designations and their rules (compiled here, each rule's local
//! time resolved to its instant), and cycles among products.

use std::collections::BTreeSet;

use super::catalog::{CompiledDesignation, CompiledRule};
use super::decide::resolve_local;
use super::issues::{EntityKind, Issues};
use super::lineage::{Adjacency, Graph};
use super::spec::CatalogData;
use crate::domain::Sku;

pub(super) fn validate_resellers(data: &CatalogData, issues: &mut Issues) {
    for (id, r) in &data.resellers {
        issues.text(EntityKind::Reseller, id, "name", &r.name);
    }
}

pub(super) fn validate_organizations(data: &CatalogData, issues: &mut Issues) {
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
pub(super) fn validate_products(data: &CatalogData, issues: &mut Issues) {
    for (sku, p) in &data.products {
        issues.text(EntityKind::Product, sku, "name", &p.name);
    }
}

pub(super) fn compile_designations(
    data: &CatalogData,
    issues: &mut Issues,
) -> Vec<CompiledDesignation> {
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
pub(super) fn report_cycles(data: &CatalogData, graph: &Graph<'_>, issues: &mut Issues) {
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
