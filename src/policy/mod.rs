//! The pure decision engine: the catalogue model, its validation, the lineage closure, nexus,
//! effective-dated rules and [`decide`].
//!
//! Nothing here does IO or reads a clock: [`Catalog::build`] turns catalogue data into an
//! immutable snapshot (validated, with every designation's reach over the product/organisation
//! graph computed once), and [`decide`] is a pure function of that snapshot, a request and an
//! instant, costing a hash lookup plus a scan of the applicable designations' rules.
//!
//! One file per part: `spec` (the catalogue entries, the admin API's request bodies), `issues`
//! and `validation` (what keeps a catalogue from being built), `catalog` (the snapshot),
//! `lineage` (the product/organisation graph and its closure), `decide` (the request, the
//! verdict and the decision), `record` (a decision as recorded and shown), `change` (one
//! change to the catalogue) and `impact` (what a change can reach). None of them knows HTTP or SQL.

mod catalog;
mod change;
mod decide;
mod impact;
mod issues;
mod lineage;
mod record;
mod spec;
#[cfg(test)]
mod tests;
mod validation;

pub use catalog::Catalog;
pub use change::{CatalogChange, NotFound};
pub use decide::{
    decide, nexus, resolve_local, Nexus, Party, Reason, ReasonCode, Request, UnknownProduct,
    Verdict,
};
pub use impact::{reach_of_change, Reach};
pub use issues::{CatalogIssue, EntityKind, MAX_TEXT_CHARS};
pub use lineage::{LineagePath, NodeKind, PathStep};
pub use record::{Constraints, Decision};
pub use spec::{
    CatalogData, DesignationSpec, OrganizationSpec, ProductSpec, RelationshipSpec, ResellerSpec,
    RuleSpec,
};
