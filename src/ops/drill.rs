//! The restore drill for pull requests: restore the latest backup into a scratch database and
//! apply the pull request's migrations to it, as `wrangler d1 migrations apply` would, so a
//! migration that breaks on production data fails the PR instead of the deploy.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::Connection;

use crate::error::{Context, Result, bad_input};
use crate::format::crypto::Key;
use crate::format::dump::split::split_all;
use crate::format::load::{Selection, load_into};
use crate::format::manifest::Manifest;
use crate::model::value::WRANGLER_TRANSACTION;
use crate::ops::erasures::{ErasureOutcome, plan};
use crate::ops::scratch::{Purpose, Scratch, sweep};
use crate::store::Store;

/// wrangler's bookkeeping table: migrations named in it are already applied.
const MIGRATIONS_TABLE: &str = "d1_migrations";

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DrillOutcome {
    /// Migrations applied, in order.
    pub applied: Vec<String>,
    /// Migrations the backup already had.
    pub already: Vec<String>,
    /// Rows that violated foreign keys before any migration ran (D1 keeps such rows; a
    /// migration is blamed only for violations it adds).
    pub old_violations: usize,
    /// The first of those rows, as [`describe`] names it.
    pub old_sample: Option<String>,
    /// The first failure: migration file, statement number (1-based, 0 for a file wrangler
    /// refuses), the error (which never quotes the statement).
    pub failure: Option<DrillFailure>,
    /// The recorded erasures applied after the load, and what each removed.
    pub erasures: Vec<ErasureOutcome>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DrillFailure {
    pub migration: String,
    pub statement: usize,
    pub error: String,
}

/// The migrations of a directory in the order `wrangler d1 migrations apply` applies them: every
/// entry whose name ends in `.sql` (case exact), see [`wrangler_order`].
pub(crate) fn migration_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| bad_input(format!("migrations directory {}: {e}", dir.display())))?;
    let names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sql"))
        .collect();
    Ok(wrangler_order(names)
        .into_iter()
        .map(|name| dir.join(name))
        .collect())
}

/// wrangler's order: names sorted as JavaScript sorts strings (by UTF-16 code units), then,
/// stably, by the number before the first `_` as `parseInt` reads it. A name without one is
/// placed as if numbered 0 (JavaScript's comparison of `NaN` orders nothing).
fn wrangler_order(mut names: Vec<String>) -> Vec<String> {
    names.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
    names.sort_by_key(|name| parse_int(name.split('_').next().unwrap_or_default()).unwrap_or(0));
    names
}

/// JavaScript's `parseInt(text)` (base 10) for the numbers a file name starts with: leading
/// white space, a sign, then digits, as far as they go; `None` (NaN) without a digit.
fn parse_int(text: &str) -> Option<i128> {
    let text = text.trim_start();
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let digits: String = rest
        .chars()
        .take_while(char::is_ascii_digit)
        .take(30)
        .collect();
    let n: i128 = digits.parse().ok()?;
    Some(if negative { -n } else { n })
}

/// What wrangler does to a migration's SQL before D1 runs it (its `trimSqlQuery`): a text holding
/// [`WRANGLER_TRANSACTION`] (case and spacing exact) loses its first `BEGIN TRANSACTION;` and its
/// first `COMMIT;`, wherever they stand, string literals included; one still holding it is
/// refused. Other text is left alone.
fn wrangler_trim(sql: &str) -> std::result::Result<String, &'static str> {
    if !sql.contains(WRANGLER_TRANSACTION) {
        return Ok(sql.to_string());
    }
    let trimmed = sql
        .replacen("BEGIN TRANSACTION;", "", 1)
        .replacen("COMMIT;", "", 1);
    if trimmed.contains(WRANGLER_TRANSACTION) {
        return Err(
            "wrangler could not process it, as it contains several transactions (wrangler refuses a file holding `BEGIN TRANSACTION` more than once)",
        );
    }
    Ok(trimmed)
}

/// Restores `manifest` into a scratch database and applies the migrations in `dir` that the
/// backup has not applied yet, with foreign keys enforced as D1 enforces them.
pub(crate) async fn drill(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    key: Option<&Key>,
    dir: &Path,
) -> Result<DrillOutcome> {
    let files = migration_files(dir)?;
    let temp = std::env::temp_dir();
    sweep(&temp);
    let scratch = Scratch::create(&temp, "backup", Purpose::Drill)?;
    let planned = plan(store.clone(), manifest, key).await?;
    let erasing = planned.erasing.clone();
    let selection = Selection::default();
    let (conn, erased) =
        load_into(store, manifest, (&selection, erasing), key, scratch.path()).await?;
    conn.execute_batch("PRAGMA foreign_keys=ON")?;
    let mut outcome = apply_migrations(&conn, &files, key.is_none())?;
    outcome.erasures = planned.outcomes(&erased);
    Ok(outcome)
}

/// A row violating a foreign key: its table, rowid, the parent table and the key's number.
type Violation = (String, i64, String, i64);

/// A violating row for a message: its rowid, table and parent table (names of the schema, never
/// a stored value), or no name at all for an encrypted backup, whose names are secret too.
fn describe(v: &Violation, named: bool) -> String {
    if named {
        format!("row {} of table {} (parent table {})", v.1, v.0, v.2)
    } else {
        "unnamed in an encrypted backup".to_string()
    }
}

/// What `PRAGMA foreign_key_check` finds now, table by table.
struct Check {
    /// Every row violating a foreign key.
    rows: BTreeSet<Violation>,
    /// Tables with a foreign key that no longer resolves (its parent lost the unique index the
    /// key names: `foreign key mismatch`). D1 keeps such a table, refuses writes to it and checks
    /// nothing through that key, so dropping its parent table leaves violations D1 accepts;
    /// wrangler applies such a migration.
    unresolved: BTreeSet<String>,
}

fn check(conn: &Connection) -> Result<Check> {
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut found = Check {
        rows: BTreeSet::new(),
        unresolved: BTreeSet::new(),
    };
    for table in tables {
        match table_violations(conn, &table) {
            Ok(rows) => found.rows.extend(rows),
            Err(e) if is_mismatch(&e) => {
                found.unresolved.insert(table);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(found)
}

/// The rows of `table` violating its foreign keys.
fn table_violations(conn: &Connection, table: &str) -> rusqlite::Result<Vec<Violation>> {
    let mut check =
        conn.prepare("SELECT \"table\", rowid, parent, fkid FROM pragma_foreign_key_check(?1)")?;
    let rows = check.query_map([table], |r| {
        Ok((
            r.get(0)?,
            r.get::<_, Option<i64>>(1)?.unwrap_or(0),
            r.get(2)?,
            r.get(3)?,
        ))
    })?;
    rows.collect()
}

/// SQLite's error for a foreign key whose parent key has no unique index (or is gone as a column).
fn is_mismatch(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(_, Some(message)) if message.starts_with("foreign key mismatch"))
}

/// Applies migration files to `conn` as `wrangler d1 migrations apply` does: each file's SQL as
/// wrangler changes it ([`wrangler_trim`]), all of it or nothing (a savepoint, where wrangler sends
/// one batch), recorded in `d1_migrations`; stops at the first failure.
pub(crate) fn apply_migrations(
    conn: &Connection,
    files: &[PathBuf],
    named: bool,
) -> Result<DrillOutcome> {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE}(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE, applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL)"
    ))?;
    let Check {
        rows: mut known,
        mut unresolved,
    } = check(conn)?;
    let mut outcome = DrillOutcome {
        applied: Vec::new(),
        already: Vec::new(),
        old_violations: known.len(),
        old_sample: known.first().map(|v| describe(v, named)),
        failure: None,
        erasures: Vec::new(),
    };
    for file in files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let done: bool = conn.query_row(
            &format!("SELECT count(*) > 0 FROM {MIGRATIONS_TABLE} WHERE name = ?1"),
            [&name],
            |r| r.get(0),
        )?;
        if done {
            outcome.already.push(name);
            continue;
        }
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let text = match wrangler_trim(&text) {
            Ok(text) => text,
            Err(refused) => {
                outcome.failure = Some(DrillFailure {
                    migration: name,
                    statement: 0,
                    error: refused.to_string(),
                });
                return Ok(outcome);
            }
        };
        let (mut statements, rest) = split_all(&text);
        statements.extend(rest);
        conn.execute_batch("SAVEPOINT migration")?;
        for (i, sql) in statements.iter().enumerate() {
            let failed = match conn.execute_batch(sql) {
                Err(e) => Some(e.to_string()),
                Ok(()) => {
                    let now = check(conn)?;
                    // Rows of a table D1 checked nothing on are not this statement's fault.
                    let (unchecked, new): (Vec<Violation>, Vec<Violation>) = now
                        .rows
                        .difference(&known)
                        .cloned()
                        .partition(|v| unresolved.contains(&v.0));
                    known.extend(unchecked);
                    unresolved = now.unresolved;
                    new.first().map(|sample| {
                        format!(
                            "it leaves {} rows violating foreign keys (D1 refuses them), the first {}",
                            new.len(),
                            describe(sample, named)
                        )
                    })
                }
            };
            if let Some(error) = failed {
                conn.execute_batch("ROLLBACK TO migration; RELEASE migration")?;
                outcome.failure = Some(DrillFailure {
                    migration: name,
                    statement: i + 1,
                    error,
                });
                return Ok(outcome);
            }
        }
        conn.execute(
            &format!("INSERT INTO {MIGRATIONS_TABLE}(name) VALUES (?1)"),
            [&name],
        )?;
        conn.execute_batch("RELEASE migration")?;
        outcome.applied.push(name);
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, sql: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, sql).unwrap();
        path
    }

    #[test]
    fn applies_pending_migrations_in_order_and_stops_at_the_first_failure() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA foreign_keys=ON; CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT); INSERT INTO users VALUES (1, 'a'), (2, 'a');").unwrap();
        write(
            dir.path(),
            "0001_init.sql",
            "CREATE TABLE IF NOT EXISTS users(id INTEGER PRIMARY KEY, email TEXT);",
        );
        write(
            dir.path(),
            "0002_posts.sql",
            "CREATE TABLE posts(id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id));\nINSERT INTO posts VALUES (1, 1)",
        );
        write(
            dir.path(),
            "0003_unique.sql",
            "-- fails on real data: two users share an email\nALTER TABLE users ADD COLUMN name TEXT;\nCREATE UNIQUE INDEX users_email ON users(email);",
        );
        write(dir.path(), "0004_never.sql", "CREATE TABLE never(x);");
        write(dir.path(), "README.md", "not a migration");
        conn.execute_batch("CREATE TABLE d1_migrations(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE, applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL); INSERT INTO d1_migrations(name) VALUES ('0001_init.sql');").unwrap();
        let files = migration_files(dir.path()).unwrap();
        assert_eq!(files.len(), 4);
        let outcome = apply_migrations(&conn, &files, true).unwrap();
        assert_eq!(outcome.already, vec!["0001_init.sql"]);
        assert_eq!(outcome.applied, vec!["0002_posts.sql"]);
        let failure = outcome.failure.unwrap();
        assert_eq!(
            (failure.migration.as_str(), failure.statement),
            ("0003_unique.sql", 2)
        );
        assert!(failure.error.contains("UNIQUE"), "{}", failure.error);
        let has_name: i64 = conn
            .query_row(
                "SELECT count(*) FROM pragma_table_info('users') WHERE name='name'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(has_name, 0, "a failed migration is rolled back whole");
    }

    #[test]
    fn wrangler_order_table() {
        for (names, want) in [
            (
                vec!["0002_b.sql", "0010_a.sql", "0001_c.sql"],
                vec!["0001_c.sql", "0002_b.sql", "0010_a.sql"],
            ),
            // By number, not by text: 10 after 9.
            (
                vec!["10_x.sql", "9_y.sql", "09_a.sql"],
                vec!["09_a.sql", "9_y.sql", "10_x.sql"],
            ),
            // The same number: by name.
            (
                vec!["1_b.sql", "01_a.sql", "1_a.sql"],
                vec!["01_a.sql", "1_a.sql", "1_b.sql"],
            ),
            // No number counts as 0.
            (vec!["2_x.sql", "init.sql"], vec!["init.sql", "2_x.sql"]),
        ] {
            let names: Vec<String> = names.into_iter().map(String::from).collect();
            assert_eq!(wrangler_order(names.clone()), want, "{names:?}");
        }
    }

    #[test]
    fn parse_int_table() {
        for (text, want) in [
            ("0001", Some(1)),
            ("12abc", Some(12)),
            (" 7", Some(7)),
            ("-3", Some(-3)),
            ("+4", Some(4)),
            ("x1", None),
            ("", None),
        ] {
            assert_eq!(parse_int(text), want, "{text}");
        }
    }

    #[test]
    fn wrangler_trim_table() {
        for (sql, want) in [
            ("CREATE TABLE t(a);", Ok("CREATE TABLE t(a);")),
            // COMMIT; alone is left alone.
            (
                "SELECT 'run COMMIT; then';",
                Ok("SELECT 'run COMMIT; then';"),
            ),
            (
                "BEGIN TRANSACTION;\nCREATE TABLE t(a);\nCOMMIT;\n",
                Ok("\nCREATE TABLE t(a);\n\n"),
            ),
            // The first of each, wherever it stands, string literals included.
            (
                "INSERT INTO t VALUES ('COMMIT;');\nBEGIN TRANSACTION;\nCOMMIT;",
                Ok("INSERT INTO t VALUES ('');\n\nCOMMIT;"),
            ),
            // Case and spacing exact.
            (
                "begin transaction;\nBEGIN  TRANSACTION;",
                Ok("begin transaction;\nBEGIN  TRANSACTION;"),
            ),
            ("BEGIN TRANSACTION", Err(())),
            (
                "BEGIN TRANSACTION;BEGIN TRANSACTION;COMMIT;COMMIT;",
                Err(()),
            ),
        ] {
            let got = wrangler_trim(sql).map_err(|_| ());
            assert_eq!(got, want.map(String::from), "{sql}");
        }
    }

    /// A migration wrapped in `BEGIN TRANSACTION; … COMMIT;` applies, as wrangler applies it.
    #[test]
    fn transaction_wrapped_migrations_apply() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open_in_memory().unwrap();
        let file = write(
            dir.path(),
            "0001_wrapped.sql",
            "BEGIN TRANSACTION;\nCREATE TABLE t(a);\nINSERT INTO t VALUES (1);\nCOMMIT;\n",
        );
        let outcome = apply_migrations(&conn, &[file], true).unwrap();
        assert_eq!(outcome.failure, None);
        assert_eq!(outcome.applied, vec!["0001_wrapped.sql"]);
    }

    /// A row that already violated a foreign key is no migration's fault (D1 keeps such rows and
    /// wrangler applies the migration); a migration that adds one fails at its statement, named
    /// with a sample row in a plain backup, not in an encrypted one.
    #[test]
    fn only_new_foreign_key_violations_fail_a_migration() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA foreign_keys=OFF; CREATE TABLE users(id INTEGER PRIMARY KEY); CREATE TABLE posts(id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id)); INSERT INTO posts VALUES (1, 99); PRAGMA foreign_keys=ON;").unwrap();
        let select = write(dir.path(), "0001_select.sql", "SELECT 1;");
        let outcome = apply_migrations(&conn, &[select], true).unwrap();
        assert_eq!(outcome.failure, None);
        assert_eq!(outcome.old_violations, 1);
        assert_eq!(
            outcome.old_sample.as_deref(),
            Some("row 1 of table posts (parent table users)")
        );
        // A foreign key whose parent lost its unique index is no migration's fault, as D1 keeps it.
        conn.execute_batch("CREATE TABLE tags(k INTEGER); CREATE UNIQUE INDEX tags_k ON tags(k); INSERT INTO tags VALUES (5); CREATE TABLE labels(k INTEGER REFERENCES tags(k)); INSERT INTO labels VALUES (5); DROP INDEX tags_k;").unwrap();
        // Nor are the rows left when its parent table is then dropped (D1 drops it).
        let other = write(dir.path(), "0003_other.sql", "CREATE TABLE y(a);");
        let drop = write(dir.path(), "0004_drop.sql", "DROP TABLE tags;");
        let outcome = apply_migrations(&conn, &[other, drop], true).unwrap();
        assert_eq!(outcome.failure, None);
        assert_eq!(outcome.applied, ["0003_other.sql", "0004_drop.sql"]);
        assert_eq!(outcome.old_violations, 1);
        let adds = write(
            dir.path(),
            "0002_adds.sql",
            "CREATE TABLE x(a);\nPRAGMA defer_foreign_keys=ON;\nINSERT INTO posts VALUES (7, 42);\nINSERT INTO x VALUES (1);",
        );
        for (named, want) in [
            (true, "the first row 7 of table posts"),
            (false, "unnamed in an encrypted backup"),
        ] {
            let outcome = apply_migrations(&conn, std::slice::from_ref(&adds), named).unwrap();
            let failure = outcome.failure.unwrap();
            assert_eq!(
                (failure.migration.as_str(), failure.statement),
                ("0002_adds.sql", 3)
            );
            assert!(
                failure.error.contains("1 rows violating"),
                "{}",
                failure.error
            );
            assert!(failure.error.contains(want), "{}", failure.error);
            assert!(!failure.error.contains("42"), "{}", failure.error);
        }
    }
}
