//! What a backup's SQL may hold: the statements d1r2 writes, each in the part it belongs to, and
//! nothing else. Pure: no I/O.
//!
//! A plain backup is not authenticated: whoever can write the bucket can write its parts and the
//! digests that pin them. Restore, verify, the D1 import and export therefore pass on only
//! statements of the shapes a backup is made of, so a part written by someone else can change the
//! rows it restores but cannot reach past them: no `ATTACH` of a file on the machine, no `DROP`
//! of a table a partial restore keeps, no `PRAGMA`, and no line in an export that the `sqlite3`
//! shell would run as one of its own commands (`.shell`, `.output`).

use crate::manifest::ObjectKind;

/// How each statement of a part of `kind` may begin (ASCII case aside). SQLite writes the
/// `CREATE` statements it keeps in `sqlite_master` with these keywords in upper case, `IF NOT
/// EXISTS` and `TEMP` dropped, and a space before the name.
fn heads(kind: ObjectKind) -> &'static [&'static str] {
    match kind {
        ObjectKind::Schema => &[
            "PRAGMA defer_foreign_keys=TRUE;",
            "CREATE TABLE ",
            "CREATE VIRTUAL TABLE ",
        ],
        // Rows as INSERTs and `||` appends; a table's AUTOINCREMENT counter after them.
        ObjectKind::Data => &[
            "INSERT INTO ",
            "UPDATE ",
            "DELETE FROM sqlite_sequence WHERE ",
        ],
        // Indexes, views and triggers, and FTS rebuilds (`INSERT INTO t(t) VALUES('rebuild')`).
        ObjectKind::Post => &[
            "CREATE INDEX ",
            "CREATE UNIQUE INDEX ",
            "CREATE VIEW ",
            "CREATE TRIGGER ",
            "INSERT INTO ",
        ],
    }
}

/// Whether d1r2 could have written `statement` (one complete statement, as the splitter hands it
/// on) into a part of `kind`.
pub fn is_backup_statement(kind: ObjectKind, statement: &str) -> bool {
    heads(kind).iter().any(|head| {
        statement
            .as_bytes()
            .get(..head.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(head.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ObjectKind::{Data, Post, Schema};

    #[test]
    fn statements_table() {
        for (kind, statement, allowed) in [
            (Schema, "PRAGMA defer_foreign_keys=TRUE;", true),
            (
                Schema,
                "CREATE TABLE \"users\"(id INTEGER PRIMARY KEY);",
                true,
            ),
            (Schema, "create table t(a);", true),
            (Schema, "CREATE VIRTUAL TABLE docs USING fts5(body);", true),
            (Data, "INSERT INTO \"t\"(\"a\") VALUES\n(1);", true),
            (
                Data,
                "UPDATE \"t\" SET \"a\"=\"a\"||'x' WHERE \"id\"=1;",
                true,
            ),
            (Data, "DELETE FROM sqlite_sequence WHERE name='t';", true),
            (Post, "CREATE UNIQUE INDEX i ON t(a);", true),
            (Post, "CREATE VIEW v AS SELECT 1;", true),
            (
                Post,
                "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END;",
                true,
            ),
            (
                Post,
                "INSERT INTO \"docs\"(\"docs\") VALUES('rebuild');",
                true,
            ),
            // What a written-over part might hold.
            (Schema, "ATTACH '/home/runner/.bashrc' AS x;", false),
            (Data, "ATTACH DATABASE 'x.db' AS x;", false),
            (Data, "DROP TABLE users;", false),
            (Data, "DELETE FROM users;", false),
            (Data, "PRAGMA writable_schema=ON;", false),
            (Schema, "PRAGMA defer_foreign_keys=OFF;", false),
            (Data, "VACUUM INTO '/tmp/copy.db';", false),
            (Data, ".shell rm -rf ~\nINSERT INTO t VALUES(1);", false),
            (Data, "-- a comment\nINSERT INTO t VALUES(1);", false),
            (Data, "BEGIN;", false),
            (Data, "CREATE TABLE t(a);", false),
            (Schema, "INSERT INTO t VALUES(1);", false),
            (Post, "UPDATE t SET a=1;", false),
            (Post, "DROP VIEW v;", false),
            (Schema, "", false),
        ] {
            assert_eq!(
                is_backup_statement(kind, statement),
                allowed,
                "{kind:?}: {statement}"
            );
        }
    }
}
