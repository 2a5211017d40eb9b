//! A local SQLite file as a source: the embedded default, and wrangler's local D1 state.
//!
//! The whole backup reads through one read-only connection inside one read transaction, so every
//! table comes from the same snapshot even while the application keeps writing. Values are read
//! natively and rendered by [`crate::model::value`], which keeps every storage class and bit.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};

use super::{Source, SourceError, columns, max_page_bytes, page_query};
use crate::model::value::{ValueRef, render};
use crate::model::{Cell, Page, SourceInfo, Table};

pub struct SqliteSource {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

impl SqliteSource {
    /// Opens `path` read-only and starts the read transaction the backup's snapshot comes from.
    pub fn open(path: &Path) -> Result<Self, SourceError> {
        let shown = path.display().to_string();
        if !path.is_file() {
            return Err(SourceError::Missing(shown));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| classify(&shown, e))?;
        conn.execute_batch("BEGIN")
            .and_then(|_| conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(())))
            .map_err(|e| classify(&shown, e))?;
        Ok(SqliteSource {
            path: path.to_path_buf(),
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, SourceError> {
        let conn = self.conn.clone();
        let shown = self.path.display().to_string();
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().expect("the connection lock is never poisoned");
            f(&conn).map_err(|e| classify(&shown, e))
        })
        .await
        .map_err(|e| SourceError::Other(format!("reading {}: {e}", self.path.display())))?
    }
}

fn classify(path: &str, err: rusqlite::Error) -> SourceError {
    match err.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => SourceError::NotADatabase(path.to_string()),
        _ => SourceError::Sqlite {
            path: path.to_string(),
            message: crate::redact::sqlite(&err),
        },
    }
}

fn cell(v: rusqlite::types::ValueRef<'_>) -> Cell {
    use rusqlite::types::ValueRef as R;
    match v {
        R::Null => Cell::Null,
        R::Integer(i) => Cell::Integer(i),
        R::Real(f) => Cell::Real(f),
        R::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
        R::Blob(b) => Cell::Blob(b.to_vec()),
    }
}

#[async_trait]
impl Source for SqliteSource {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            kind: "sqlite".to_string(),
            name: self
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned()),
            ..SourceInfo::default()
        }
    }

    async fn query(&self, statements: &[String]) -> Result<Vec<Vec<Vec<Cell>>>, SourceError> {
        let statements = statements.to_vec();
        self.with_conn(move |conn| {
            let mut results = Vec::new();
            for sql in &statements {
                let mut stmt = conn.prepare(sql)?;
                let n = stmt.column_count();
                let rows = stmt
                    .query_map([], |row| (0..n).map(|i| row.get_ref(i).map(cell)).collect())?
                    .collect::<rusqlite::Result<Vec<Vec<Cell>>>>()?;
                results.push(rows);
            }
            Ok(results)
        })
        .await
    }

    async fn page(
        &self,
        table: &Table,
        after: Option<&[String]>,
        upto: Option<i64>,
        limit: usize,
    ) -> Result<Page, SourceError> {
        let sql = page_query(table, after, upto, limit, |_, c| c.to_string(), columns);
        let max_bytes = max_page_bytes(self);
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare(&sql)?;
            let n = stmt.column_count();
            let mut rows = stmt.query([])?;
            let mut page = Page::new(n);
            while let Some(row) = rows.next()? {
                for i in 0..n {
                    let value = ValueRef::from(row.get_ref(i)?);
                    page.push_with(|text| render(value, text));
                }
                if page.literal_bytes() >= max_bytes {
                    page.mark_cut();
                    break;
                }
            }
            Ok(page)
        })
        .await
    }
}
