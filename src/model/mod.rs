//! The types every layer shares: what a source yields (cells, pages of rows, the tables and
//! schema of a database, where it came from), how a value is written as SQL, and what a command
//! reports. Nothing here does I/O or knows a source, a store or the backup format.

pub mod page;
pub(crate) mod progress;
pub(crate) mod report;
pub mod table;
pub mod value;

use serde::{Deserialize, Serialize};

pub use page::{Page, Row};
pub use table::{Affinity, DataMode, Schema, SchemaObject, Table, TableFilter, affinity};

/// A value from a catalog query. Catalog answers are small names and integers, so the lossy JSON
/// numbers of D1 are harmless here; table data never travels as `Cell`s but as literals.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// What the manifest records about where a backup came from. No secrets: ids and names only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// `sqlite` or `d1`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// D1 Time Travel bookmark before the backup's first read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bookmark: Option<String>,
    /// D1 Time Travel bookmark after the backup's last read: `bookmark` again when no write
    /// landed in between.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_bookmark: Option<String>,
}

impl SourceInfo {
    /// Whether the backup is one moment of its source: a SQLite file is read in one read
    /// transaction, always; a D1 database when its bookmark did not move between the first read
    /// and the last (D1's bookmark moves with every write). `None` when that is not known: no
    /// bookmark (a token without access to Time Travel), or a backup made before both were
    /// recorded.
    pub fn consistent(&self) -> Option<bool> {
        if self.kind == "sqlite" {
            return Some(true);
        }
        match (&self.bookmark, &self.end_bookmark) {
            (Some(start), Some(end)) => Some(start == end),
            _ => None,
        }
    }
}
