//! Validation issues: why a catalogue cannot be built, each naming an entity and a field of its
//! request body.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest accepted name, title, authority, citation or alias, in characters.
pub const MAX_TEXT_CHARS: usize = 256;

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

/// The issues found so far, as validation and the graph build report them.
pub(super) struct Issues(pub(super) Vec<CatalogIssue>);

impl Issues {
    pub(super) fn push(
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

    pub(super) fn text(
        &mut self,
        entity: EntityKind,
        id: impl fmt::Display,
        field: &str,
        value: &str,
    ) {
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
