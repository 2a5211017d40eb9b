//! The restore drill for pull requests: restore the latest backup into a scratch database and
//! apply the pull request's migrations to it, as `wrangler d1 migrations apply` would, so a
//! migration that breaks on production data fails the PR instead of the deploy.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::Connection;

use crate::error::{Context, Result, bad_input};
use crate::format::crypto::Key;
use crate::format::dump::split::split_all;
use crate::format::load::{Selection, load_into};
use crate::format::manifest::Manifest;
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
    /// The first failure: migration file, statement number (1-based), statement, SQLite error.
    pub failure: Option<DrillFailure>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DrillFailure {
    pub migration: String,
    pub statement: usize,
    pub sql: String,
    pub error: String,
}

/// The `.sql` files of a migrations directory in the order wrangler applies them: by file name.
pub(crate) fn migration_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| bad_input(format!("migrations directory {}: {e}", dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    Ok(files)
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
    let conn = load_into(store, manifest, &Selection::default(), key, scratch.path()).await?;
    conn.execute_batch("PRAGMA foreign_keys=ON")?;
    apply_migrations(&conn, &files)
}

/// Applies migration files to `conn`, each in its own savepoint, recording them in
/// `d1_migrations` as wrangler does; stops at the first failure.
pub(crate) fn apply_migrations(conn: &Connection, files: &[PathBuf]) -> Result<DrillOutcome> {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE}(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE, applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL)"
    ))?;
    let mut outcome = DrillOutcome {
        applied: Vec::new(),
        already: Vec::new(),
        failure: None,
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
        let (mut statements, rest) = split_all(&text);
        statements.extend(rest);
        conn.execute_batch("SAVEPOINT migration")?;
        for (i, sql) in statements.iter().enumerate() {
            if let Err(e) = conn.execute_batch(sql) {
                conn.execute_batch("ROLLBACK TO migration; RELEASE migration")?;
                outcome.failure = Some(DrillFailure {
                    migration: name,
                    statement: i + 1,
                    sql: sql.trim().to_string(),
                    error: e.to_string(),
                });
                return Ok(outcome);
            }
        }
        let violations = conn
            .prepare("PRAGMA foreign_key_check")?
            .query_map([], |_| Ok(()))?
            .count();
        if violations > 0 {
            conn.execute_batch("ROLLBACK TO migration; RELEASE migration")?;
            outcome.failure = Some(DrillFailure {
                migration: name,
                statement: statements.len(),
                sql: String::new(),
                error: format!(
                    "{violations} rows violate foreign keys after this migration (D1 enforces them)"
                ),
            });
            return Ok(outcome);
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
        let outcome = apply_migrations(&conn, &files).unwrap();
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
    fn foreign_key_violations_fail_the_migration() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA foreign_keys=OFF; CREATE TABLE users(id INTEGER PRIMARY KEY); CREATE TABLE posts(id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id)); INSERT INTO posts VALUES (1, 99); PRAGMA foreign_keys=ON;").unwrap();
        let file = write(dir.path(), "0001_x.sql", "CREATE TABLE x(a);");
        let outcome = apply_migrations(&conn, &[file]).unwrap();
        assert!(outcome.failure.unwrap().error.contains("foreign keys"));
    }
}
