//! The tables of a backup and how each is read: the plan a source's catalog yields, which the
//! backup format records and every operation reads.

use super::value::quote_ident;

/// Which tables the user asked for.
#[derive(Debug, Clone, Default)]
pub struct TableFilter {
    /// Only these tables (all when empty).
    pub include: Vec<String>,
    /// Never these tables.
    pub exclude: Vec<String>,
    /// Never these columns, as (table, column): data minimisation.
    pub exclude_columns: Vec<(String, String)>,
}

/// The plan of a dump: tables in creation order and the objects created after the data.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    pub tables: Vec<Table>,
    /// Indexes, views and triggers, in the order they are to be created.
    pub post: Vec<SchemaObject>,
    /// Tables left out, each with the reason (internal, shadow, filtered).
    pub skipped: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SchemaObject {
    pub kind: String,
    pub name: String,
    pub table: String,
    pub sql: String,
}

/// How a table's contents are carried in the dump.
#[derive(Debug, Clone, PartialEq)]
pub enum DataMode {
    /// Rows are read and written as INSERTs.
    Rows,
    /// An FTS5 table over external content: refilled from its content table with `rebuild`.
    Rebuild,
    /// Nothing can be read back (a contentless FTS5 index); the reason is reported.
    Skip(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub name: String,
    pub create_sql: String,
    /// The virtual table module (`fts5`, ...), lowercased, for virtual tables.
    pub module: Option<String>,
    pub without_rowid: bool,
    /// The cells read for every row, in order: the rowid (under a name no column shadows) when
    /// no column aliases it, then every column that can be inserted (not generated, not hidden).
    pub columns: Vec<String>,
    /// The declared affinity of each of `columns` (the rowid's is INTEGER): which type a cell
    /// most likely holds, though any column but a STRICT one's may hold any.
    pub affinities: Vec<Affinity>,
    /// Indexes into `columns` of the key pages are ordered and resumed by.
    pub key: Vec<usize>,
    pub data: DataMode,
    /// The `sqlite_sequence` value of an AUTOINCREMENT table, as a literal.
    pub sequence: Option<String>,
}

impl Table {
    /// The index in `columns` of the rowid when the table is keyed by it (the rowid itself or the
    /// column aliasing it): its values are integers, and its pages can be split by range.
    pub fn rowid_key(&self) -> Option<usize> {
        match self.key.as_slice() {
            [only] if !self.without_rowid => Some(*only),
            _ => None,
        }
    }

    /// `"a","b"` for the cells of this table.
    pub fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A column's type affinity, from its declared type by SQLite's rules (section 3.1 of "Datatypes
/// In SQLite").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Affinity {
    Integer,
    Text,
    Blob,
    Real,
    Numeric,
}

/// The affinity SQLite gives a column declared `decl_type`: the first rule that matches wins.
pub fn affinity(decl_type: &str) -> Affinity {
    let t = decl_type.to_ascii_uppercase();
    if t.contains("INT") {
        Affinity::Integer
    } else if ["CHAR", "CLOB", "TEXT"].iter().any(|k| t.contains(k)) {
        Affinity::Text
    } else if t.contains("BLOB") || t.is_empty() {
        Affinity::Blob
    } else if ["REAL", "FLOA", "DOUB"].iter().any(|k| t.contains(k)) {
        Affinity::Real
    } else {
        Affinity::Numeric
    }
}
