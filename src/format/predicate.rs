//! A `--where` predicate: SQL a user writes to name a person's rows in one table, for `find` and
//! `forget`. It is text that d1r2 places inside a statement of its own, so it is held to what a
//! predicate is: [`check_text`] refuses anything that could end the `WHERE` clause or start a
//! second statement, and SQLite evaluates it only on a connection [`confine`]d to reading the
//! tables at hand (no `ATTACH`, no pragma, no recursive query, no extension, small limits).
//! [`plan`] turns one into the `DELETE`s that remove the rows it names, and with `related` the
//! rows of other tables whose foreign keys point at them.

use rusqlite::Connection;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;

use crate::error::{Classify, Kind};
use crate::model::value::quote_ident;

/// The longest predicate taken: a person is named in a line, not a page.
pub const MAX_LEN: usize = 4096;

/// How deep `related` follows foreign keys (a table pointing at one that points at `T` is 2).
pub const MAX_DEPTH: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum PredicateError {
    #[error("--where {problem}; give a SQLite expression over the columns of {table}")]
    Text {
        table: String,
        problem: &'static str,
    },
    #[error("--table {table}: the backup has no such table")]
    NoTable { table: String },
    #[error("--where does not apply to table {table}: {reason}")]
    Invalid { table: String, reason: String },
}

/// A predicate that is not one, or names what the table lacks, is the user's to fix.
impl Classify for PredicateError {
    fn kind(&self) -> Kind {
        match self {
            PredicateError::Text { .. }
            | PredicateError::NoTable { .. }
            | PredicateError::Invalid { .. } => Kind::BadInput,
        }
    }
}

/// Why `text` cannot stand inside `WHERE (…)`, or `None` when it can: it must be non-empty and
/// short, hold no `;` and no comment outside its string literals and quoted names, close every
/// quote, and close exactly the parentheses it opens (so it cannot close d1r2's and go on with a
/// `UNION` or an `ORDER BY` of its own).
pub fn check_text(text: &str) -> Option<&'static str> {
    if text.trim().is_empty() {
        return Some("is empty");
    }
    if text.len() > MAX_LEN {
        return Some("is longer than 4096 bytes");
    }
    let bytes = text.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            open @ (b'\'' | b'"' | b'`' | b'[') => {
                let close = if open == b'[' { b']' } else { open };
                match closing(bytes, i + 1, close) {
                    Some(end) => i = end,
                    None => return Some("has a quote it does not close"),
                }
            }
            b';' => return Some("holds a `;`: one expression, not statements"),
            b'-' if bytes.get(i + 1) == Some(&b'-') => return Some("holds a comment"),
            b'/' if bytes.get(i + 1) == Some(&b'*') => return Some("holds a comment"),
            b'(' => depth += 1,
            b')' if depth == 0 => return Some("closes a parenthesis it did not open"),
            b')' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    (depth != 0).then_some("leaves a parenthesis open")
}

/// The index of the quote that closes one opened before `from` (a doubled quote is an escaped
/// one, except in `[…]`).
fn closing(bytes: &[u8], mut from: usize, close: u8) -> Option<usize> {
    while from < bytes.len() {
        if bytes[from] == close {
            if close != b']' && bytes.get(from + 1) == Some(&close) {
                from += 2;
                continue;
            }
            return Some(from);
        }
        from += 1;
    }
    None
}

/// Limits SQLite holds a predicate's evaluation to: a short statement, a shallow expression, no
/// other database, short `LIKE` patterns; nothing a person's rows need more of.
const LIMITS: &[(Limit, i32)] = &[
    (Limit::SQLITE_LIMIT_SQL_LENGTH, 1 << 20),
    (Limit::SQLITE_LIMIT_EXPR_DEPTH, 100),
    (Limit::SQLITE_LIMIT_COMPOUND_SELECT, 4),
    (Limit::SQLITE_LIMIT_ATTACHED, 0),
    (Limit::SQLITE_LIMIT_LIKE_PATTERN_LENGTH, 1000),
    (Limit::SQLITE_LIMIT_FUNCTION_ARG, 16),
];

/// Functions a predicate may not call: those that reach outside the database or change how
/// SQLite reads one.
const DENIED_FUNCTIONS: &[&str] = &["load_extension", "fts3_tokenizer", "readfile", "writefile"];

/// Lowers SQLite's limits on `conn`, a connection that runs nothing but predicates ([`LIMITS`]).
pub fn limit(conn: &Connection) -> rusqlite::Result<()> {
    for (limit, value) in LIMITS {
        conn.set_limit(*limit, *value)?;
    }
    Ok(())
}

/// Confines `conn` for evaluating predicates: an authorizer that lets statements read, and with
/// `delete` delete from, only `tables` (and the shadow tables of those that are FTS5 tables,
/// which also read `PRAGMA data_version`), in at most `selects` `SELECT`s (so `Some(1)` allows no
/// subquery in a `SELECT`); any `ATTACH`, pragma, write elsewhere, recursive query or denied
/// function is refused when the statement is prepared. Undone by [`release`].
pub fn confine(
    conn: &mut Connection,
    tables: Vec<String>,
    delete: bool,
    selects: Option<usize>,
) -> rusqlite::Result<()> {
    let mut tables = tables;
    tables.extend(shadows_of(conn, &tables)?);
    let allowed = move |name: &str| tables.iter().any(|t| t.eq_ignore_ascii_case(name));
    let mut seen = 0usize;
    let hook = move |ctx: AuthContext<'_>| match ctx.action {
        AuthAction::Select => {
            seen += 1;
            if selects.is_some_and(|most| seen > most) {
                Authorization::Deny
            } else {
                Authorization::Allow
            }
        }
        AuthAction::Read { table_name, .. } if allowed(table_name) => Authorization::Allow,
        AuthAction::Delete { table_name } if delete && allowed(table_name) => Authorization::Allow,
        AuthAction::Function { function_name }
            if !DENIED_FUNCTIONS
                .iter()
                .any(|f| f.eq_ignore_ascii_case(function_name)) =>
        {
            Authorization::Allow
        }
        // FTS5 reads it, to see whether its cached structure is current.
        AuthAction::Pragma {
            pragma_name,
            pragma_value: None,
        } if pragma_name.eq_ignore_ascii_case("data_version") => Authorization::Allow,
        _ => Authorization::Deny,
    };
    conn.authorizer(Some(hook))
}

/// The shadow tables of the virtual tables among `tables` (an FTS5 table reads its own to answer
/// a query): those SQLite lists as shadow tables, named after one of `tables` and a `_`.
fn shadows_of(conn: &Connection, tables: &[String]) -> rusqlite::Result<Vec<String>> {
    let shadows: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_list WHERE type = 'shadow'")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(shadows
        .into_iter()
        .filter(|s| {
            tables.iter().any(|t| {
                s.len() > t.len() + 1
                    && s.is_char_boundary(t.len())
                    && s[..t.len()].eq_ignore_ascii_case(t)
                    && s.as_bytes()[t.len()] == b'_'
            })
        })
        .collect())
}

/// Lifts [`confine`]'s authorizer.
pub fn release(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.authorizer(None::<fn(AuthContext<'_>) -> Authorization>)
}

/// A foreign key of `child` (its columns `from`) on `parent` (its columns `to`, the parent's
/// primary key when the schema names none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    pub child: String,
    pub from: Vec<String>,
    pub parent: String,
    pub to: Vec<String>,
}

/// One `DELETE` of an erasure: the table it removes rows from, which of its rows (a condition
/// on them, which `find` selects by), and the statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub table: String,
    pub condition: String,
    pub sql: String,
}

/// The rows of `table` matching `predicate` as a condition on `table`'s own columns.
fn own_condition(predicate: &str) -> String {
    format!("({predicate})")
}

/// The `DELETE`s that remove `table`'s rows matching `predicate`, and with `related` first the
/// rows of every table whose foreign keys (`fks`) lead to them, up to [`MAX_DEPTH`] tables away,
/// deepest first, so each runs while the rows it is chosen by are still there. A table reached
/// again (a cycle, a self-reference) is not followed again. Pure.
pub fn plan(table: &str, predicate: &str, related: bool, fks: &[ForeignKey]) -> Vec<Step> {
    let mut reached: Vec<(String, String)> = vec![(table.to_string(), own_condition(predicate))];
    let mut frontier = 0;
    for _ in 0..MAX_DEPTH {
        if !related {
            break;
        }
        let end = reached.len();
        for i in frontier..end {
            let (parent, condition) = reached[i].clone();
            for fk in fks
                .iter()
                .filter(|fk| fk.parent.eq_ignore_ascii_case(&parent))
            {
                if fk.from.len() != fk.to.len() || fk.from.is_empty() {
                    continue;
                }
                if reached
                    .iter()
                    .any(|(t, _)| t.eq_ignore_ascii_case(&fk.child))
                {
                    continue;
                }
                reached.push((fk.child.clone(), child_condition(fk, &condition)));
            }
        }
        frontier = end;
    }
    reached
        .into_iter()
        .rev()
        .map(|(table, condition)| Step {
            sql: format!("DELETE FROM {} WHERE {condition}", quote_ident(&table)),
            table,
            condition,
        })
        .collect()
}

/// The rows of `fk.child` whose key points at a row of `fk.parent` meeting `parent_condition`.
fn child_condition(fk: &ForeignKey, parent_condition: &str) -> String {
    let list = |cols: &[String]| {
        let cols: Vec<String> = cols.iter().map(|c| quote_ident(c)).collect();
        if cols.len() == 1 {
            cols[0].clone()
        } else {
            format!("({})", cols.join(", "))
        }
    };
    let to: Vec<String> = fk.to.iter().map(|c| quote_ident(c)).collect();
    format!(
        "{} IN (SELECT {} FROM {} WHERE {parent_condition})",
        list(&fk.from),
        to.join(", "),
        quote_ident(&fk.parent)
    )
}

/// Every foreign key of the tables in `conn`'s schema, as SQLite reads them
/// (`pragma_foreign_key_list`, with an omitted parent column list as the parent's primary key).
/// Run before [`confine`], which refuses pragmas.
pub fn foreign_keys(conn: &Connection) -> rusqlite::Result<Vec<ForeignKey>> {
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out: Vec<ForeignKey> = Vec::new();
    for child in tables {
        let mut stmt = conn.prepare(
            "SELECT id, \"table\", \"from\", \"to\" FROM pragma_foreign_key_list(?1) ORDER BY id, seq",
        )?;
        let rows = stmt.query_map([&child], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })?;
        let mut last: Option<i64> = None;
        for row in rows {
            let (id, parent, from, to) = row?;
            if last != Some(id) {
                out.push(ForeignKey {
                    child: child.clone(),
                    from: Vec::new(),
                    parent,
                    to: Vec::new(),
                });
                last = Some(id);
            }
            let fk = out.last_mut().expect("pushed above");
            fk.from.push(from);
            fk.to.extend(to);
        }
    }
    for fk in out.iter_mut().filter(|fk| fk.to.is_empty()) {
        fk.to = primary_key(conn, &fk.parent)?;
    }
    Ok(out)
}

/// The primary key columns of `table`, in key order (empty when it has none).
fn primary_key(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    conn.prepare("SELECT name FROM pragma_table_info(?1) WHERE pk > 0 ORDER BY pk")?
        .query_map([table], |r| r.get(0))?
        .collect()
}

/// The name of `table` as `conn`'s schema spells it, if it has one by that name (SQLite's names
/// are case-blind). Run before [`confine`].
pub fn table_named(conn: &Connection, table: &str) -> rusqlite::Result<Option<String>> {
    use rusqlite::OptionalExtension;
    conn.query_row(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name = ?1 COLLATE NOCASE",
        [table],
        |r| r.get(0),
    )
    .optional()
}

/// Checks that `predicate` is a condition on `table` in `conn`'s schema: its text passes
/// [`check_text`] and `SELECT 1 FROM table WHERE (predicate)` prepares on the connection
/// confined to `table` alone, with no subquery (and [`limit`]ed: `conn` runs predicates only).
/// So a predicate is a condition on one row: the same rows give the same answer whichever part
/// or chunk holds them, and the rest of the table changes nothing. SQLite's message is kept only when it quotes nothing of it.
pub fn validate(conn: &mut Connection, table: &str, predicate: &str) -> Result<(), PredicateError> {
    if let Some(problem) = check_text(predicate) {
        return Err(PredicateError::Text {
            table: table.to_string(),
            problem,
        });
    }
    let invalid = |e: rusqlite::Error| PredicateError::Invalid {
        table: table.to_string(),
        reason: reason(&e),
    };
    limit(conn).map_err(invalid)?;
    confine(conn, vec![table.to_string()], false, Some(1)).map_err(invalid)?;
    let sql = format!(
        "SELECT 1 FROM {} WHERE {}",
        quote_ident(table),
        own_condition(predicate)
    );
    let prepared = conn.prepare(&sql).map(drop);
    release(conn).map_err(invalid)?;
    prepared.map_err(invalid)
}

/// Why SQLite refused a predicate, as a message may say it: its own message when it quotes
/// nothing (`no such column: emial`), else its result code's description; a quote would be of
/// the predicate, which names a person.
fn reason(err: &rusqlite::Error) -> String {
    match err {
        rusqlite::Error::SqlInputError { msg, .. } if !msg.contains(['"', '\'', '`', '[']) => {
            msg.clone()
        }
        other => crate::redact::sqlite(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_table() {
        for (text, ok) in [
            ("id = 42", true),
            ("email = 'a;b--c/*d'", true),
            ("\"we;ird\" = 1", true),
            ("[a)b] = 1 AND `c(` = 2", true),
            ("name = 'it''s'", true),
            ("(a = 1) OR (b IN (1, 2))", true),
            ("id IN (SELECT id FROM t WHERE x = 1)", true),
            ("id IN (1, 2, (3))", true),
            ("", false),
            ("   ", false),
            ("1) UNION SELECT * FROM secrets WHERE (1", false),
            ("1); DROP TABLE t; --", false),
            ("id = 1; DELETE FROM t", false),
            ("id = 1 -- and more", false),
            ("id = 1 /* x */", false),
            ("(id = 1", false),
            ("id = 1)", false),
            ("name = 'open", false),
            ("\"open = 1", false),
            ("[open = 1", false),
        ] {
            assert_eq!(check_text(text).is_none(), ok, "{text:?}");
        }
        assert!(check_text(&"x".repeat(MAX_LEN + 1)).is_some());
    }

    fn fk(child: &str, from: &[&str], parent: &str, to: &[&str]) -> ForeignKey {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect();
        ForeignKey {
            child: child.into(),
            from: v(from),
            parent: parent.into(),
            to: v(to),
        }
    }

    #[test]
    fn plan_table() {
        let fks = vec![
            fk("orders", &["user_id"], "users", &["id"]),
            fk("items", &["order_id"], "orders", &["id"]),
            fk("users", &["boss"], "users", &["id"]),
            fk("pairs", &["a", "b"], "users", &["x", "y"]),
            fk("other", &["z"], "elsewhere", &["id"]),
        ];
        let sqls = |steps: Vec<Step>| steps.into_iter().map(|s| s.sql).collect::<Vec<_>>();
        assert_eq!(
            sqls(plan("users", "id = 1", false, &fks)),
            ["DELETE FROM \"users\" WHERE (id = 1)"]
        );
        assert_eq!(
            sqls(plan("users", "id = 1", true, &fks)),
            [
                "DELETE FROM \"items\" WHERE \"order_id\" IN (SELECT \"id\" FROM \"orders\" WHERE \"user_id\" IN (SELECT \"id\" FROM \"users\" WHERE (id = 1)))",
                "DELETE FROM \"pairs\" WHERE (\"a\", \"b\") IN (SELECT \"x\", \"y\" FROM \"users\" WHERE (id = 1))",
                "DELETE FROM \"orders\" WHERE \"user_id\" IN (SELECT \"id\" FROM \"users\" WHERE (id = 1))",
                "DELETE FROM \"users\" WHERE (id = 1)",
            ]
        );
    }

    #[test]
    fn confined_predicates_read_only_their_table() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, email TEXT); CREATE TABLE s(k);",
        )
        .unwrap();
        assert!(validate(&mut conn, "t", "email = 'a' AND id > 2").is_ok());
        for bad in [
            "nope = 1",
            "id IN (SELECT k FROM s)",
            "id IN (SELECT id FROM t WHERE email = 'a')",
            "load_extension('x') IS NULL",
            "id IN (WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT n FROM r)",
            "1) UNION SELECT k FROM s WHERE (1",
        ] {
            assert!(validate(&mut conn, "t", bad).is_err(), "{bad}");
        }
        // The connection is released afterwards: its own reads work again.
        conn.execute_batch("SELECT * FROM s").unwrap();
        // An FTS5 table is read through its shadow tables, which a predicate on it may read;
        // another table's are not.
        conn.execute_batch(
            "CREATE VIRTUAL TABLE docs USING fts5(owner, body); INSERT INTO docs VALUES ('p', 'b');
             CREATE VIRTUAL TABLE other USING fts5(x);",
        )
        .unwrap();
        confine(&mut conn, vec!["docs".into()], false, None).unwrap();
        let count: i64 = conn
            .query_row("SELECT count(*) FROM docs WHERE owner = 'p'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(count, 1);
        assert!(conn.prepare("SELECT * FROM other_data").is_err());
        release(&mut conn).unwrap();
    }
}
