//! Turning a planned schema and pages of literals into the SQL of a backup. Pure: no I/O.

pub mod insert;
pub mod shape;
pub mod split;
pub mod value;

use crate::manifest::SchemaEntry;
use crate::source::{DataMode, Schema, Table};
use value::{quote_ident, render_str};

/// The first statement of every dump. D1 enforces foreign keys; deferring them lets tables load
/// in any order and be checked once, at the end of the import.
pub const PRELUDE: &str = "PRAGMA defer_foreign_keys=TRUE;\n";

/// The schema part: the prelude and every table's CREATE statement, with what each creates.
pub fn schema_sql(schema: &Schema) -> (String, Vec<SchemaEntry>) {
    let mut sql = String::from(PRELUDE);
    let mut entries = Vec::new();
    for table in &schema.tables {
        sql.push_str(table.create_sql.trim_end_matches(';'));
        sql.push_str(";\n");
        entries.push(SchemaEntry {
            kind: "table".into(),
            name: table.name.clone(),
            table: table.name.clone(),
        });
    }
    (sql, entries)
}

/// The post part: FTS rebuilds, then indexes, views and triggers (after the data, so triggers do
/// not fire while rows load and indexes are built once).
pub fn post_sql(schema: &Schema) -> (String, Vec<SchemaEntry>) {
    let mut sql = String::new();
    let mut entries = Vec::new();
    for table in schema.tables.iter().filter(|t| t.data == DataMode::Rebuild) {
        let ident = quote_ident(&table.name);
        sql.push_str(&format!(
            "INSERT INTO {ident}({ident}) VALUES('rebuild');\n"
        ));
        entries.push(SchemaEntry {
            kind: "rebuild".into(),
            name: table.name.clone(),
            table: table.name.clone(),
        });
    }
    for object in &schema.post {
        sql.push_str(object.sql.trim_end_matches(';'));
        sql.push_str(";\n");
        entries.push(SchemaEntry {
            kind: object.kind.clone(),
            name: object.name.clone(),
            table: object.table.clone(),
        });
    }
    (sql, entries)
}

/// Restores a table's AUTOINCREMENT counter after its rows (which move it) are in.
pub fn sequence_sql(table: &Table) -> Option<String> {
    let seq = table.sequence.as_ref()?;
    let mut name = String::new();
    render_str(&table.name, &mut name);
    Some(format!(
        "DELETE FROM sqlite_sequence WHERE name={name};\nINSERT INTO sqlite_sequence(name,seq) VALUES({name},{seq});\n"
    ))
}
