//! What a catalogue change can reach: the lineage closure read backwards.
//!
//! An impact run re-decides only the licences a change can reach, never the
//! whole portfolio. [`reach_of_change`] compares two snapshots and names the
//! products whose decisions can differ between them (a designation that
//! applies to them came, went, took another path, or changed its rules,
//! jurisdiction or citation) and the resellers whose facts changed (every
//! licence of theirs is reached). [`Catalog::reached_by`] is the same index
//! for one designation: the products a rule instant of it reaches.
//!
//! Sound by construction, and checked by a property test: a product outside
//! the reach, sold by a reseller outside it, gets the same verdict from both
//! snapshots for every transaction, party and instant.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::catalog::Catalog;
use crate::domain::{CountryCode, DesignationId, ResellerId, RuleId, Sku};

/// The products and resellers a change between two snapshots can reach.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reach {
    pub products: BTreeSet<Sku>,
    pub resellers: BTreeSet<ResellerId>,
}

impl Reach {
    pub fn is_empty(&self) -> bool {
        self.products.is_empty() && self.resellers.is_empty()
    }
}

impl Catalog {
    /// The products designation `d` applies to (in SKU order); none for an
    /// unknown designation.
    pub fn reached_by(&self, d: &DesignationId) -> Vec<Sku> {
        let Some(index) = self.designation_index(d) else {
            return Vec::new();
        };
        self.data()
            .products
            .keys()
            .filter(|sku| {
                self.lineage
                    .get(sku.as_str())
                    .is_some_and(|a| a.iter().any(|a| a.designation == index))
            })
            .cloned()
            .collect()
    }
}

/// What a change from `old` to `new` can reach. Putting the same content
/// again reaches nothing.
pub fn reach_of_change(old: &Catalog, new: &Catalog) -> Reach {
    // Designations whose facts a decision reads (rules, jurisdiction,
    // citation) changed, or that came or went: every product they apply to,
    // in either snapshot, is reached. What else a designation says (its
    // organisations, affiliates, carve-outs) shows in the paths compared
    // below; the order entries were listed in changes nothing.
    let ids: BTreeSet<&DesignationId> = old
        .designations
        .iter()
        .chain(&new.designations)
        .map(|d| &d.id)
        .collect();
    let changed: BTreeSet<&DesignationId> = ids
        .into_iter()
        .filter(|id| facts(old, id) != facts(new, id))
        .collect();
    let mut reach = Reach::default();
    for sku in new.data().products.keys() {
        let before = applying(old, sku);
        let after = applying(new, sku);
        if before != after
            || before
                .iter()
                .chain(&after)
                .any(|(id, _)| changed.contains(id))
        {
            reach.products.insert(sku.clone());
        }
    }
    let (old_r, new_r) = (&old.data().resellers, &new.data().resellers);
    reach.resellers = new_r
        .iter()
        .filter(|(id, spec)| old_r.get(*id) != Some(*spec))
        .map(|(id, _)| id.clone())
        .collect();
    reach
}

/// The designations that apply to `sku` in `catalog`, by id, with their
/// paths (in designation-id order).
fn applying<'a>(
    catalog: &'a Catalog,
    sku: &Sku,
) -> Vec<(&'a DesignationId, &'a [super::PathStep])> {
    catalog
        .lineage
        .get(sku.as_str())
        .map(|applicable| {
            applicable
                .iter()
                .map(|a| (&catalog.designations[a.designation].id, a.path.steps()))
                .collect()
        })
        .unwrap_or_default()
}

/// What a decision reads of designation `id` in `catalog`, in a form
/// independent of the order its rules were listed in.
type Facts<'a> = (
    &'a str,
    &'a CountryCode,
    BTreeSet<(&'a RuleId, DateTime<Utc>, BTreeSet<&'static str>, bool)>,
);

fn facts<'a>(catalog: &'a Catalog, id: &DesignationId) -> Option<Facts<'a>> {
    let d = &catalog.designations[catalog.designation_index(id)?];
    let rules = d
        .rules
        .iter()
        .map(|r| {
            let transactions = r.transactions.iter().map(|t| t.as_str()).collect();
            (&r.id, r.instant, transactions, r.ends_service)
        })
        .collect();
    Some((d.citation.as_str(), &d.jurisdiction, rules))
}
