//! The catalogue snapshot: [`Catalog::build`] validates catalogue data and computes every
//! designation's reach once, giving an immutable, versioned [`Catalog`] that decisions read.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::issues::{CatalogIssue, Issues};
use super::lineage::{Graph, LineagePath, PathStep, Scratch};
use super::spec::{CatalogData, DesignationSpec, OrganizationSpec, ProductSpec, ResellerSpec};
use super::validation::{
    compile_designations, report_cycles, validate_organizations, validate_products,
    validate_resellers,
};
use crate::domain::{CountryCode, DesignationId, OrgId, ResellerId, RuleId, Sku, Transaction};

#[derive(Clone, Debug)]
pub(super) struct CompiledRule {
    pub(super) id: RuleId,
    pub(super) instant: DateTime<Utc>,
    pub(super) transactions: Vec<Transaction>,
    pub(super) ends_service: bool,
}

#[derive(Clone, Debug)]
pub(super) struct CompiledDesignation {
    pub(super) id: DesignationId,
    pub(super) citation: String,
    pub(super) jurisdiction: CountryCode,
    pub(super) rules: Vec<CompiledRule>,
}

/// A designation that applies to a product, with the shortest explaining path.
#[derive(Clone, Debug)]
pub(super) struct Applicable {
    /// Index into `Catalog::designations`.
    pub(super) designation: usize,
    pub(super) path: LineagePath,
}

/// An immutable, validated catalogue snapshot with its lineage closure computed.
#[derive(Clone, Debug)]
pub struct Catalog {
    version: i64,
    data: CatalogData,
    /// In designation-id order.
    pub(super) designations: Vec<CompiledDesignation>,
    /// Every product -> the designations that apply to it (in designation-id order; empty when
    /// none does), so [`decide`](super::decide) finds a product and its lineage with one hash
    /// lookup.
    pub(super) lineage: HashMap<Box<str>, Box<[Applicable]>>,
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

    /// Whether rule `rule` of designation `d` ends service (false for an unknown rule).
    pub fn ends_service(&self, d: &DesignationId, rule: &RuleId) -> bool {
        self.designation_index(d)
            .and_then(|index| self.designations.get(index))
            .and_then(|compiled| compiled.rules.iter().find(|r| &r.id == rule))
            .is_some_and(|r| r.ends_service)
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

    pub(super) fn designation_index(&self, d: &DesignationId) -> Option<usize> {
        self.designations.binary_search_by(|c| c.id.cmp(d)).ok()
    }
}
