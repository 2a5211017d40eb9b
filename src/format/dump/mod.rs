//! Turning a planned schema and pages of literals into the SQL of a backup. Pure: no I/O.

pub(crate) mod insert;
pub(crate) mod shape;
pub mod split;

use crate::format::manifest::{ObjectKind, SchemaEntry, SchemaKind};
use crate::model::value::{quote_ident, render_str};
use crate::model::{DataMode, Schema, Table};

/// The first statement of every dump. D1 enforces foreign keys; deferring them lets tables load
/// in any order and be checked once, at the end of the import.
pub const PRELUDE: &str = "PRAGMA defer_foreign_keys=TRUE;\n";

/// Why the schema or post part cannot be written so that a restore can tell what each statement
/// creates.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the statement of {entry} does not create it ({reason}), so a restore could not select it: {sql}"
    )]
    Unmatched {
        entry: SchemaEntry,
        reason: String,
        sql: String,
    },
    #[error("{name:?} is a {kind} in sqlite_master, which a backup does not know how to keep")]
    UnknownKind { kind: String, name: String },
}

/// A schema d1r2 cannot write a faithful backup of is a failure of the backup, not something
/// the user typed wrong.
impl crate::error::Classify for SchemaError {
    fn kind(&self) -> crate::error::Kind {
        match self {
            SchemaError::Unmatched { .. } | SchemaError::UnknownKind { .. } => {
                crate::error::Kind::Failed
            }
        }
    }
}

/// A statement of the schema or post part and the manifest entry saying what it creates, made
/// together: the manifest's schema list is these entries in statement order, and a restore
/// matches them back one for one.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaStatement {
    pub entry: SchemaEntry,
    /// One statement, ending in `;`.
    pub sql: String,
}

impl SchemaStatement {
    /// Pairs `sql` with `entry` once a reader would: a backup whose restore would refuse its own
    /// schema fails now, not when it is needed.
    fn new(entry: SchemaEntry, sql: &str) -> Result<Self, SchemaError> {
        let sql = format!("{};", sql.trim_end_matches(';'));
        match shape::check_creates(&entry, &sql) {
            Ok(()) => Ok(SchemaStatement { entry, sql }),
            Err(reason) => Err(SchemaError::Unmatched { entry, reason, sql }),
        }
    }
}

/// The schema part's statements: every table's CREATE statement.
pub fn schema_statements(schema: &Schema) -> Result<Vec<SchemaStatement>, SchemaError> {
    schema
        .tables
        .iter()
        .map(|table| {
            let entry = SchemaEntry {
                kind: SchemaKind::Table,
                name: table.name.clone(),
                table: table.name.clone(),
            };
            SchemaStatement::new(entry, &table.create_sql)
        })
        .collect()
}

/// The post part's statements: FTS rebuilds, then indexes, views and triggers (after the data,
/// so triggers do not fire while rows load and indexes are built once).
pub fn post_statements(schema: &Schema) -> Result<Vec<SchemaStatement>, SchemaError> {
    let rebuilds = schema
        .tables
        .iter()
        .filter(|t| t.data == DataMode::Rebuild)
        .map(|table| {
            let ident = quote_ident(&table.name);
            let entry = SchemaEntry {
                kind: SchemaKind::Rebuild,
                name: table.name.clone(),
                table: table.name.clone(),
            };
            SchemaStatement::new(
                entry,
                &format!("INSERT INTO {ident}({ident}) VALUES('rebuild')"),
            )
        });
    let objects = schema.post.iter().map(|object| {
        let kind = [SchemaKind::Index, SchemaKind::View, SchemaKind::Trigger]
            .into_iter()
            .find(|k| k.as_str() == object.kind)
            .ok_or_else(|| SchemaError::UnknownKind {
                kind: object.kind.clone(),
                name: object.name.clone(),
            })?;
        let entry = SchemaEntry {
            kind,
            name: object.name.clone(),
            table: object.table.clone(),
        };
        SchemaStatement::new(entry, &object.sql)
    });
    rebuilds.chain(objects).collect()
}

/// The SQL of a part of `kind` holding `statements`, one a line; the schema part starts with
/// [`PRELUDE`].
pub fn part_sql(kind: ObjectKind, statements: &[SchemaStatement]) -> String {
    let mut sql = String::new();
    if kind == ObjectKind::Schema {
        sql.push_str(PRELUDE);
    }
    for statement in statements {
        sql.push_str(&statement.sql);
        sql.push('\n');
    }
    sql
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SchemaObject;

    fn table(name: &str, create_sql: &str, data: DataMode) -> Table {
        Table {
            name: name.into(),
            create_sql: create_sql.into(),
            module: None,
            without_rowid: false,
            columns: vec![],
            affinities: vec![],
            key: vec![],
            data,
            sequence: None,
        }
    }

    fn object(kind: &str, name: &str, table: &str, sql: &str) -> SchemaObject {
        SchemaObject {
            kind: kind.into(),
            name: name.into(),
            table: table.into(),
            sql: sql.into(),
        }
    }

    fn listed(statements: &[SchemaStatement]) -> Vec<(SchemaKind, &str, &str)> {
        statements
            .iter()
            .map(|s| (s.entry.kind, s.entry.name.as_str(), s.entry.table.as_str()))
            .collect()
    }

    #[test]
    fn each_statement_comes_with_what_it_creates() {
        let schema = Schema {
            tables: vec![
                table("a b", "CREATE TABLE \"a b\"(x);", DataMode::Rows),
                table(
                    "docs",
                    "CREATE VIRTUAL TABLE docs USING fts5(x, content='a b')",
                    DataMode::Rebuild,
                ),
            ],
            post: vec![
                object("index", "i", "a b", "CREATE INDEX i ON [a b](x)"),
                object("view", "v", "v", "CREATE VIEW v AS SELECT 1"),
                object(
                    "trigger",
                    "tr",
                    "a b",
                    "CREATE TRIGGER tr AFTER INSERT ON \"a b\" BEGIN SELECT 1; END",
                ),
            ],
            skipped: vec![],
        };
        let tables = schema_statements(&schema).unwrap();
        assert_eq!(
            listed(&tables),
            [
                (SchemaKind::Table, "a b", "a b"),
                (SchemaKind::Table, "docs", "docs")
            ]
        );
        assert_eq!(
            part_sql(ObjectKind::Schema, &tables),
            "PRAGMA defer_foreign_keys=TRUE;\nCREATE TABLE \"a b\"(x);\n\
             CREATE VIRTUAL TABLE docs USING fts5(x, content='a b');\n"
        );
        let post = post_statements(&schema).unwrap();
        assert_eq!(
            listed(&post),
            [
                (SchemaKind::Rebuild, "docs", "docs"),
                (SchemaKind::Index, "i", "a b"),
                (SchemaKind::View, "v", "v"),
                (SchemaKind::Trigger, "tr", "a b"),
            ]
        );
        assert_eq!(
            part_sql(ObjectKind::Post, &post),
            "INSERT INTO \"docs\"(\"docs\") VALUES('rebuild');\nCREATE INDEX i ON [a b](x);\n\
             CREATE VIEW v AS SELECT 1;\n\
             CREATE TRIGGER tr AFTER INSERT ON \"a b\" BEGIN SELECT 1; END;\n"
        );
    }

    /// A catalog whose statement creates something else than its row names would make a backup
    /// its own restore refuses: the backup fails instead.
    #[test]
    fn a_statement_that_creates_something_else_fails_the_backup() {
        let mut schema = Schema {
            tables: vec![table("a", "CREATE TABLE b(x)", DataMode::Rows)],
            post: vec![],
            skipped: vec![],
        };
        let err = schema_statements(&schema).unwrap_err();
        assert!(
            matches!(&err, SchemaError::Unmatched { entry, .. } if entry.name == "a"),
            "{err}"
        );
        assert!(err.to_string().contains("it creates table \"b\""), "{err}");
        schema.tables.clear();
        for (kind, sql) in [
            ("index", "CREATE INDEX i ON u(x)"),
            ("trigger", "CREATE VIEW i AS SELECT 1"),
            ("rebuild", "INSERT INTO t(t) VALUES('rebuild')"),
            ("table", "CREATE TABLE i(x)"),
        ] {
            schema.post = vec![object(kind, "i", "t", sql)];
            assert!(post_statements(&schema).is_err(), "{kind}: {sql}");
        }
    }
}
