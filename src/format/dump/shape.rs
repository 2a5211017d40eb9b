//! What a backup's SQL may hold: the statements d1r2 writes, each in the part it belongs to, and
//! nothing else. Pure: no I/O.
//!
//! A plain backup is not authenticated: whoever can write the bucket can write its parts and the
//! digests that pin them. Restore, verify, the D1 import and export therefore pass on only
//! statements of the shapes a backup is made of, so a part written by someone else can change the
//! rows it restores but cannot reach past them: no `ATTACH` of a file on the machine, no `DROP`
//! of a table a partial restore keeps, no `PRAGMA`, and no line in an export that the `sqlite3`
//! shell would run as one of its own commands (`.shell`, `.output`).

use crate::format::manifest::{ObjectKind, SchemaEntry, SchemaKind};

/// Rows as INSERTs and `||` appends; a table's AUTOINCREMENT counter after them.
const DATA: &[&str] = &[
    "INSERT INTO ",
    "UPDATE ",
    "DELETE FROM sqlite_sequence WHERE ",
];

/// How a statement creating an object of `kind` begins (ASCII case aside). SQLite writes the
/// `CREATE` statements it keeps in `sqlite_master` with these keywords in upper case, `IF NOT
/// EXISTS`, `TEMP` and any schema name dropped, and a space before the name; d1r2 writes FTS
/// rebuilds as `INSERT INTO t(t) VALUES('rebuild')`.
fn heads(kind: SchemaKind) -> &'static [&'static str] {
    match kind {
        SchemaKind::Table => &["CREATE TABLE ", "CREATE VIRTUAL TABLE "],
        SchemaKind::Index => &["CREATE INDEX ", "CREATE UNIQUE INDEX "],
        SchemaKind::View => &["CREATE VIEW "],
        SchemaKind::Trigger => &["CREATE TRIGGER "],
        SchemaKind::Rebuild => &["INSERT INTO "],
    }
}

/// `statement` after `head`, when it begins with it (ASCII case aside).
fn after<'s>(statement: &'s str, head: &str) -> Option<&'s str> {
    let start = statement.as_bytes().get(..head.len())?;
    // An ASCII head matched byte for byte ends on a character boundary.
    start
        .eq_ignore_ascii_case(head.as_bytes())
        .then(|| &statement[head.len()..])
}

/// Whether d1r2 could have written `statement` (one complete statement, as the splitter hands it
/// on) into a part of `kind`: the prelude or a table's CREATE in the schema part, rows in a data
/// part, what the post part creates there.
pub(crate) fn is_backup_statement(kind: ObjectKind, statement: &str) -> bool {
    let begins = |heads: &[&str]| heads.iter().any(|h| after(statement, h).is_some());
    match kind {
        ObjectKind::Data => begins(DATA),
        part => {
            (part == ObjectKind::Schema && is_prelude(statement))
                || SchemaKind::ALL
                    .iter()
                    .any(|k| k.part() == part && begins(heads(*k)))
        }
    }
}

/// Whether `statement` is the schema part's prelude, the one statement of the schema and post
/// parts that creates nothing and has no entry in the manifest.
pub(crate) fn is_prelude(statement: &str) -> bool {
    // The statement as the schema part writes it, less the line end the splitter leaves off.
    after(statement, super::PRELUDE.trim_end()).is_some()
}

/// Checks that `statement` creates what `entry` says: the kind of object, its name and the table
/// it belongs to (names compared as SQLite does, unquoted and ASCII case aside). The error says
/// what the statement creates instead.
pub(crate) fn check_creates(entry: &SchemaEntry, statement: &str) -> Result<(), String> {
    match created(statement) {
        Some(c)
            if c.kind == entry.kind
                && c.name.eq_ignore_ascii_case(&entry.name)
                && c.table.eq_ignore_ascii_case(&entry.table) =>
        {
            Ok(())
        }
        Some(c) => Err(format!("it creates {c}")),
        None => Err("it creates nothing a schema entry names".into()),
    }
}

/// What a schema or post statement creates, read from its head: the object's kind and name,
/// and the table an index or trigger is on (`ON`, the first bare keyword of that name after a
/// trigger's name; a column called `on` must be quoted). `None` when it is none of these shapes.
pub(crate) fn created(statement: &str) -> Option<SchemaEntry> {
    let (kind, rest) = SchemaKind::ALL.iter().find_map(|&kind| {
        heads(kind)
            .iter()
            .find_map(|h| after(statement, h))
            .map(|rest| (kind, rest))
    })?;
    let mut tokens = Tokens(rest);
    let name = tokens.name()?;
    let table = match kind {
        SchemaKind::Table | SchemaKind::View => name.clone(),
        SchemaKind::Index => {
            tokens.keyword("ON")?;
            tokens.name()?
        }
        SchemaKind::Trigger => {
            while !matches!(tokens.next()?, Token::Word(w) if w.eq_ignore_ascii_case("ON")) {}
            let table = tokens.name()?;
            // A trigger's table may carry its schema's name (`ON main.t`).
            let mut peek = tokens.clone();
            match peek.next() {
                Some(Token::Punct('.')) => peek.name()?,
                _ => table,
            }
        }
        SchemaKind::Rebuild => {
            // `t(t) VALUES('rebuild')` and nothing after: any other INSERT adds rows.
            tokens.punct('(')?;
            let column = tokens.name()?;
            tokens.punct(')')?;
            tokens.keyword("VALUES")?;
            tokens.punct('(')?;
            match tokens.next()? {
                Token::Quoted('\'', command) if command == "rebuild" => {}
                _ => return None,
            }
            tokens.punct(')')?;
            if let Some(Token::Punct(';')) = tokens.clone().next() {
                tokens.next();
            }
            if tokens.next().is_some() || !column.eq_ignore_ascii_case(&name) {
                return None;
            }
            name.clone()
        }
    };
    Some(SchemaEntry { kind, name, table })
}

/// A token of SQL as SQLite's tokenizer reads it, as far as a statement's head needs.
#[derive(Debug, PartialEq)]
enum Token<'s> {
    /// A bare word: a keyword or an unquoted name.
    Word(&'s str),
    /// A name or string in `"`, `'`, `` ` `` or `[]`, unquoted; the opening quote with it.
    Quoted(char, String),
    Punct(char),
}

/// The tokens of some SQL; ends early at an unterminated quote.
#[derive(Clone)]
struct Tokens<'s>(&'s str);

impl<'s> Tokens<'s> {
    fn name(&mut self) -> Option<String> {
        match self.next()? {
            Token::Word(w) => Some(w.to_string()),
            Token::Quoted(_, name) => Some(name),
            Token::Punct(_) => None,
        }
    }

    fn keyword(&mut self, keyword: &str) -> Option<()> {
        matches!(self.next()?, Token::Word(w) if w.eq_ignore_ascii_case(keyword)).then_some(())
    }

    fn punct(&mut self, c: char) -> Option<()> {
        (self.next()? == Token::Punct(c)).then_some(())
    }

    fn skip_space_and_comments(&mut self) {
        loop {
            let s = self.0.trim_start_matches(|c: char| c.is_ascii_whitespace());
            if let Some(rest) = s.strip_prefix("--") {
                self.0 = rest.find('\n').map_or("", |end| &rest[end + 1..]);
            } else if let Some(rest) = s.strip_prefix("/*") {
                self.0 = rest.find("*/").map_or("", |end| &rest[end + 2..]);
            } else {
                self.0 = s;
                return;
            }
        }
    }
}

impl<'s> Iterator for Tokens<'s> {
    type Item = Token<'s>;

    fn next(&mut self) -> Option<Token<'s>> {
        self.skip_space_and_comments();
        let first = self.0.chars().next()?;
        let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '$' || !c.is_ascii();
        if is_word(first) {
            let end = self.0.find(|c: char| !is_word(c)).unwrap_or(self.0.len());
            let (word, rest) = self.0.split_at(end);
            self.0 = rest;
            return Some(Token::Word(word));
        }
        let close = match first {
            '"' | '\'' | '`' => first,
            '[' => ']',
            _ => {
                self.0 = &self.0[first.len_utf8()..];
                return Some(Token::Punct(first));
            }
        };
        // Inside the quotes a doubled closing quote stands for one (never inside `[]`).
        let mut text = String::new();
        let mut rest = &self.0[1..];
        loop {
            let end = rest.find(close)?;
            text.push_str(&rest[..end]);
            rest = &rest[end + 1..];
            if close != ']' && rest.starts_with(close) {
                text.push(close);
                rest = &rest[1..];
            } else {
                self.0 = rest;
                return Some(Token::Quoted(first, text));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ObjectKind::{Data, Post, Schema};

    fn entry(kind: SchemaKind, name: &str, table: &str) -> SchemaEntry {
        SchemaEntry {
            kind,
            name: name.into(),
            table: table.into(),
        }
    }

    /// What a statement creates, as SQLite keeps it in `sqlite_master` (names quoted every way
    /// SQLite reads them, comments where a user wrote them) and as d1r2 writes a rebuild.
    #[test]
    fn what_a_statement_creates_table() {
        use SchemaKind::{Index, Rebuild, Table, Trigger, View};
        for (statement, want) in [
            ("CREATE TABLE users(id);", Some((Table, "users", "users"))),
            ("create table t (a)", Some((Table, "t", "t"))),
            ("CREATE TABLE \"a\"\"b\"(x);", Some((Table, "a\"b", "a\"b"))),
            ("CREATE TABLE [Fo o](a)", Some((Table, "Fo o", "Fo o"))),
            ("CREATE TABLE `v``x` (a)", Some((Table, "v`x", "v`x"))),
            ("CREATE TABLE 'it''s'(a)", Some((Table, "it's", "it's"))),
            ("CREATE TABLE ünï$1(a)", Some((Table, "ünï$1", "ünï$1"))),
            (
                "CREATE TABLE \"x\"\"; DROP TABLE users; --\"(a)",
                Some((
                    Table,
                    "x\"; DROP TABLE users; --",
                    "x\"; DROP TABLE users; --",
                )),
            ),
            (
                "CREATE VIRTUAL TABLE docs USING fts5(body)",
                Some((Table, "docs", "docs")),
            ),
            (
                "CREATE UNIQUE INDEX \"i\"\"x\" /*c*/ on [fo o](a)",
                Some((Index, "i\"x", "fo o")),
            ),
            (
                "CREATE INDEX i -- why\n ON \"select\"(lower(\"from\"))",
                Some((Index, "i", "select")),
            ),
            ("CREATE VIEW `v` as select 1", Some((View, "v", "v"))),
            (
                "CREATE TRIGGER 'tr' after update of a on main.[Fo o] begin select 1; end",
                Some((Trigger, "tr", "Fo o")),
            ),
            (
                "CREATE TRIGGER t2 before update of \"on\", [ON] on \"U 2\" begin select 1; end",
                Some((Trigger, "t2", "U 2")),
            ),
            (
                "CREATE TRIGGER trg INSTEAD OF INSERT ON v_gen BEGIN INSERT INTO gen(a) VALUES (new.a); END",
                Some((Trigger, "trg", "v_gen")),
            ),
            (
                "INSERT INTO \"docs\"(\"docs\") VALUES('rebuild');",
                Some((Rebuild, "docs", "docs")),
            ),
            (
                "insert into d (D) values ( 'rebuild' )",
                Some((Rebuild, "d", "d")),
            ),
            // Nothing a schema entry names.
            (
                "INSERT INTO docs(docs) VALUES('rebuild'),('delete-all');",
                None,
            ),
            (
                "INSERT INTO docs(docs) VALUES('rebuild'); DROP TABLE t;",
                None,
            ),
            ("INSERT INTO docs(body) VALUES('rebuild');", None),
            ("INSERT INTO docs(docs) VALUES('optimize');", None),
            ("INSERT INTO docs(docs) VALUES(\"rebuild\");", None),
            ("INSERT INTO docs VALUES('rebuild');", None),
            ("CREATE INDEX i ONt(a)", None),
            ("CREATE INDEX i(a)", None),
            ("CREATE TRIGGER tr AFTER INSERT BEGIN SELECT 1; END", None),
            ("CREATE TABLE \"unterminated(a)", None),
            ("CREATE TABLE (a)", None),
            ("CREATE TEMP TABLE t(a)", None),
            ("CREATE  TABLE t(a)", None),
            ("PRAGMA defer_foreign_keys=TRUE;", None),
            ("UPDATE t SET a=1", None),
            ("", None),
        ] {
            let want = want.map(|(kind, name, table)| entry(kind, name, table));
            assert_eq!(created(statement), want, "{statement}");
        }
    }

    /// Every object SQLite itself keeps in `sqlite_master`, however its user named and wrote it,
    /// is read back as its row says: its type, its name and its table.
    #[test]
    fn sqlite_master_rows_are_read_as_sqlite_keeps_them() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS main.[Fo o](a, \"on\", [x]);
             CREATE TABLE \"tab\"\"le\" (\"sel\"\"ect\" TEXT);
             CREATE TABLE `back``tick`(a);
             CREATE TABLE 'str''ing'(a);
             CREATE TABLE ünïcödé(a);
             CREATE TABLE \"on\"(\"on\");
             CREATE TABLE\n\t\"select\"\n(\"from\");
             CREATE TABLE p AS SELECT 1 AS \"x y\", 2 AS z;
             CREATE TABLE old(a); ALTER TABLE old RENAME TO \"new name\";
             CREATE VIRTUAL TABLE main.f USING fts5(b);
             create unique index if not exists main.\"i\"\"x\" /*c*/ on [fo o](a);
             CREATE INDEX [in dex] ON \"on\"(\"on\") WHERE \"on\" > 1;
             CREATE INDEX on_renamed ON \"new name\"(a);
             CREATE VIEW main.`v w` AS SELECT 1;
             CREATE VIEW \"vv\"(a) AS SELECT 1;
             CREATE TRIGGER main.'tr' AFTER UPDATE OF a, \"on\", [x] ON main.[Fo o]
                 BEGIN SELECT 1; END;
             CREATE TRIGGER IF NOT EXISTS t2 BEFORE DELETE ON \"new name\" FOR EACH ROW
                 WHEN old.a IS NOT NULL BEGIN SELECT 1; END;
             CREATE TRIGGER \"t 3\" -- a trigger\n INSTEAD OF INSERT ON `v w`
                 BEGIN INSERT INTO \"on\" VALUES (1); END;",
        )
        .unwrap();
        let mut rows = conn
            .prepare("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL")
            .unwrap();
        let rows: Vec<(String, String, String, String)> = rows
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(rows.len() > 20, "{rows:?}");
        for (kind, name, table, sql) in rows {
            let kind = SchemaKind::ALL
                .into_iter()
                .find(|k| k.as_str() == kind)
                .unwrap();
            let entry = SchemaEntry { kind, name, table };
            assert_eq!(check_creates(&entry, &sql), Ok(()), "{entry}: {sql}");
        }
    }

    #[test]
    fn a_statement_matches_its_entry_table() {
        use SchemaKind::{Index, Table, Trigger, View};
        for (entry, statement, matches) in [
            (
                entry(Table, "users", "users"),
                "CREATE TABLE \"users\"(a);",
                true,
            ),
            // SQLite's names ignore ASCII case, and an index's table is named as its user wrote it.
            (
                entry(Index, "i", "Fo o"),
                "CREATE INDEX I ON [fo o](a);",
                true,
            ),
            (
                entry(Table, "ÜSERS", "ÜSERS"),
                "CREATE TABLE \"üsers\"(a);",
                false,
            ),
            (
                entry(Table, "users", "users"),
                "CREATE TABLE \"user\"(a);",
                false,
            ),
            (
                entry(Table, "users", "other"),
                "CREATE TABLE users(a);",
                false,
            ),
            (
                entry(View, "users", "users"),
                "CREATE TABLE users(a);",
                false,
            ),
            (entry(Index, "i", "a"), "CREATE INDEX i ON b(x);", false),
            (
                entry(Trigger, "tr", "a"),
                "CREATE TRIGGER tr AFTER INSERT ON b BEGIN SELECT 1; END;",
                false,
            ),
            (
                entry(Trigger, "tr", "b"),
                "CREATE TRIGGER tr AFTER INSERT ON b BEGIN SELECT 1; END;",
                true,
            ),
            (entry(Table, "t", "t"), "INSERT INTO t(a) VALUES(1);", false),
        ] {
            assert_eq!(
                check_creates(&entry, statement).is_ok(),
                matches,
                "{entry}: {statement}"
            );
        }
        assert_eq!(
            check_creates(&entry(View, "v", "v"), "CREATE INDEX i ON t(a)"),
            Err("it creates index \"i\" on \"t\"".into())
        );
    }

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
