//! Cloudflare D1 over its REST API (`/raw`) as a source.
//!
//! D1 answers with JSON, whose numbers round integers beyond 2^53 and whose BLOBs are arrays of
//! bytes, so table data never travels as JSON values: every cell is read through SQLite's own
//! `quote()`, which writes a lossless SQL literal as a string, and a text value holding NUL
//! (which `quote()` would cut short) as its bytes in hex. When a page comes back with a U+FFFD
//! replacement character, the text may have been invalid UTF-8 that JSON could not carry, so that
//! page is read again with all of its text in hex. Catalog answers (names, small integers) are the
//! only JSON values used.
//!
//! Each page is one request, a keyset query: rows read stay at the row count (plus the catalog),
//! never the quadratic cost of `OFFSET`. D1 has no read transaction across requests, so the backup
//! is not one snapshot of a database under writes; the Time Travel bookmark taken at the start is
//! recorded so the exact moment can be restored with `wrangler d1 time-travel restore`.

use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Cell, Page, Source, SourceError, SourceInfo, Table, page_query};
use crate::cloudflare::{Api, ApiError};

/// Statements sent in one request (catalog queries, tables' first pages): one request is one
/// rate-limit token.
const STATEMENTS_PER_REQUEST: usize = 50;
/// SQL in one `/raw` request, well under D1's 100,000-byte statement limit.
const MAX_REQUEST_SQL: usize = 90_000;

pub struct D1Source {
    api: Api,
    id: String,
    name: String,
}

/// One statement's answer from `/raw`, its rows as `R`: JSON values for the catalog, a packed
/// [`Page`] straight from the parser for `quote()`d pages.
#[derive(Debug, Deserialize)]
#[serde(bound = "R: serde::de::DeserializeOwned + Default")]
struct RawResult<R> {
    #[serde(default)]
    results: RawRows<R>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(bound = "R: serde::de::DeserializeOwned + Default")]
struct RawRows<R> {
    #[serde(default)]
    rows: R,
}

#[derive(Debug, Deserialize)]
struct DatabaseEntry {
    uuid: String,
    name: String,
}

/// An answer of the import API, at any of its steps.
#[derive(Debug, Default, Deserialize)]
struct ImportAnswer {
    success: Option<bool>,
    status: Option<String>,
    at_bookmark: Option<String>,
    upload_url: Option<String>,
    filename: Option<String>,
    error: Option<String>,
    #[serde(default)]
    errors: Vec<Value>,
    result: Option<ImportResult>,
}

/// What a finished import reports.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImportResult {
    #[serde(default)]
    pub num_queries: u64,
    pub final_bookmark: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Bookmark {
    bookmark: Option<String>,
}

impl From<ApiError> for SourceError {
    fn from(err: ApiError) -> Self {
        SourceError::Api(err)
    }
}

/// Whether `text` is a D1 database id (a UUID) rather than a name.
pub fn is_database_id(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The page query's cell: `quote()`, with NUL-holding text as `CAST(X'..' AS TEXT)` and
/// integers as `CAST(.. AS TEXT)`, the same digits without `quote()`'s printf (less time for D1).
pub fn quoted_cell(column: &str) -> String {
    format!(
        "CASE typeof({column}) WHEN 'integer' THEN CAST({column} AS TEXT) WHEN 'text' THEN CASE WHEN instr({column},char(0)) THEN 'CAST(X'''||hex({column})||''' AS TEXT)' ELSE quote({column}) END ELSE quote({column}) END"
    )
}

/// The cell of a page read again: every text value as its bytes.
pub fn hex_text_cell(column: &str) -> String {
    format!(
        "CASE WHEN typeof({column})='text' THEN 'CAST(X'''||hex({column})||''' AS TEXT)' ELSE quote({column}) END"
    )
}

/// A literal from `quote()`, made one SQLite itself reads back exactly: SQLite before 3.43 writes
/// infinity as `Inf`, which it does not read.
pub fn normalize_literal(literal: &str) -> &str {
    match literal {
        "Inf" | "+Inf" => "9.0e999",
        "-Inf" => "-9.0e999",
        _ => literal,
    }
}

/// The literals of a row D1 sent as one string (`quote(a)||','||quote(b)`): commas outside
/// single quotes separate them, and `quote()` writes a comma nowhere else (a quote inside a text
/// literal is doubled, so it toggles twice).
pub fn split_row(row: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(row);
    std::iter::from_fn(move || {
        let text = rest?;
        let mut quoted = false;
        for (i, b) in text.bytes().enumerate() {
            match b {
                b'\'' => quoted = !quoted,
                b',' if !quoted => {
                    rest = Some(&text[i + 1..]);
                    return Some(&text[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(text)
    })
}

/// A file as a request body, read as it is sent.
fn file_body(path: &std::path::Path) -> reqwest::Body {
    match std::fs::File::open(path) {
        Ok(file) => reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(
            tokio::fs::File::from_std(file),
        )),
        Err(e) => {
            reqwest::Body::wrap_stream(futures::stream::once(
                async move { Err::<bytes::Bytes, _>(e) },
            ))
        }
    }
}

/// A catalog value from D1's JSON.
fn cell(value: Value) -> Result<Cell, SourceError> {
    Ok(match value {
        Value::Null => Cell::Null,
        Value::Bool(b) => Cell::Integer(b as i64),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Cell::Integer(i),
            None => Cell::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Cell::Text(s),
        Value::Array(items) => Cell::Blob(
            items
                .iter()
                .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| SourceError::Other("D1 sent a BLOB that is not bytes".into()))?,
        ),
        Value::Object(_) => return Err(SourceError::Other("D1 sent an object as a value".into())),
    })
}

impl D1Source {
    /// Finds the database by id or by name (names through the list-databases endpoint).
    pub async fn connect(api: Api, database: &str) -> Result<Self, SourceError> {
        let path = api.account_path("d1/database");
        let found = if is_database_id(database) {
            match api
                .result::<DatabaseEntry>(
                    Method::GET,
                    &format!("{path}/{database}"),
                    None,
                    "looking up the database",
                )
                .await
            {
                Ok(entry) => Some(entry),
                Err(e) if e.status() == Some(404) => None,
                Err(e) => return Err(e.into()),
            }
        } else {
            Self::find_by_name(&api, &path, database).await?
        };
        let entry = found.ok_or_else(|| {
            SourceError::Missing(format!(
                "d1://{database} (no such database in the account; `wrangler d1 list` shows them)"
            ))
        })?;
        Ok(D1Source {
            api,
            id: entry.uuid,
            name: entry.name,
        })
    }

    async fn find_by_name(
        api: &Api,
        path: &str,
        name: &str,
    ) -> Result<Option<DatabaseEntry>, SourceError> {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("name", name)
            .append_pair("per_page", "100")
            .finish();
        for page in 1.. {
            let envelope = api
                .call::<Vec<DatabaseEntry>>(
                    Method::GET,
                    &format!("{path}?{query}&page={page}"),
                    None,
                    "listing databases",
                )
                .await?;
            let entries = envelope.result.unwrap_or_default();
            let count = entries.len();
            if let Some(entry) = entries.into_iter().find(|e| e.name == name) {
                return Ok(Some(entry));
            }
            let total = envelope
                .result_info
                .as_ref()
                .and_then(|i| i["total_count"].as_u64());
            let seen = (page * 100) as u64;
            if count < 100 || total.is_some_and(|t| seen >= t) {
                break;
            }
        }
        Ok(None)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database's own objects (`(type, name)`), D1's and SQLite's internals left out.
    pub async fn user_objects(&self) -> Result<Vec<(String, String)>, SourceError> {
        let rows = self
            .query(&["SELECT type, name FROM sqlite_master WHERE type IN ('table','view') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\' ORDER BY rowid".to_string()])
            .await?;
        Ok(rows
            .into_iter()
            .flatten()
            .filter_map(|row| match row.as_slice() {
                [Cell::Text(kind), Cell::Text(name)] => Some((kind.clone(), name.clone())),
                _ => None,
            })
            .collect())
    }

    /// Applies the SQL file at `path` (`size` bytes, MD5 `etag` in hex) through D1's import API:
    /// `init`, `PUT` to the upload URL, `ingest`, then `poll` until D1 says `complete`. D1 applies
    /// the file as one unit, so a failure leaves the database as it was.
    pub async fn import(
        &self,
        path: &std::path::Path,
        size: u64,
        etag: &str,
    ) -> Result<ImportResult, SourceError> {
        let endpoint = self
            .api
            .account_path(&format!("d1/database/{}/import", self.id));
        let call = |body: Value, what: &'static str| {
            let endpoint = endpoint.clone();
            async move {
                self.api
                    .result::<ImportAnswer>(Method::POST, &endpoint, Some(&body), what)
                    .await
            }
        };
        let init = call(
            json!({"action": "init", "etag": etag}),
            "starting the import",
        )
        .await?;
        let mut answer = match (&init.upload_url, &init.filename) {
            (Some(url), Some(filename)) => {
                let uploaded = self
                    .api
                    .put_url(
                        url,
                        size,
                        || file_body(path),
                        "uploading the SQL file for import",
                    )
                    .await?;
                if uploaded.as_deref() != Some(etag) {
                    return Err(SourceError::Other(format!(
                        "the import upload to d1://{} arrived damaged (MD5 {} instead of {etag}); run the restore again",
                        self.name,
                        uploaded.as_deref().unwrap_or("missing")
                    )));
                }
                call(
                    json!({"action": "ingest", "etag": etag, "filename": filename}),
                    "ingesting the import",
                )
                .await?
            }
            // D1 already holds this exact file: it went straight to ingesting.
            _ => init,
        };
        let mut wait = std::time::Duration::from_millis(200);
        loop {
            let failed = answer.success == Some(false) || answer.status.as_deref() == Some("error");
            if failed {
                let mut reasons: Vec<String> = answer.error.iter().cloned().collect();
                reasons.extend(answer.errors.iter().map(|e| match e {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }));
                reasons.dedup();
                return Err(SourceError::Other(format!(
                    "D1 refused the import into d1://{}: {} (the database was left as it was)",
                    self.name,
                    reasons.join("; ")
                )));
            }
            if answer.status.as_deref() == Some("complete") {
                return Ok(answer.result.unwrap_or_default());
            }
            let Some(bookmark) = answer.at_bookmark.clone() else {
                return Err(SourceError::Other(
                    "D1's import answer has neither a status nor a bookmark to poll".to_string(),
                ));
            };
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(std::time::Duration::from_secs(5));
            answer = call(
                json!({"action": "poll", "current_bookmark": bookmark}),
                "polling the import",
            )
            .await?;
        }
    }

    /// Runs `sql` (one or more statements) through `/raw` and returns each statement's rows.
    async fn raw<R: serde::de::DeserializeOwned + Default>(
        &self,
        sql: &str,
        what: &str,
    ) -> Result<Vec<R>, SourceError> {
        let path = self
            .api
            .account_path(&format!("d1/database/{}/raw", self.id));
        let results: Vec<RawResult<R>> = self
            .api
            .result(Method::POST, &path, Some(&json!({ "sql": sql })), what)
            .await?;
        Ok(results.into_iter().map(|r| r.results.rows).collect())
    }

    /// Runs several statements in one `/raw` request and returns each one's rows, failing when D1
    /// answers a different number of statements than it was sent.
    async fn statements<R: serde::de::DeserializeOwned + Default>(
        &self,
        statements: &[String],
        what: &str,
    ) -> Result<Vec<R>, SourceError> {
        let answers: Vec<R> = self.raw(&statements.join(";\n"), what).await?;
        if answers.len() != statements.len() {
            return Err(SourceError::Other(format!(
                "{what}: D1 answered {} of {} statements",
                answers.len(),
                statements.len()
            )));
        }
        Ok(answers)
    }

    /// `page` as read with `quote()`, or read again with every text as its bytes when D1 handed
    /// back U+FFFD (text that is not valid UTF-8, which its JSON cannot carry).
    async fn readable(
        &self,
        page: Page,
        table: &Table,
        after: Option<&[String]>,
        limit: usize,
    ) -> Result<Page, SourceError> {
        if page.contains('\u{FFFD}') {
            return self.literal_page(table, after, limit, hex_text_cell).await;
        }
        Ok(page)
    }

    async fn literal_page(
        &self,
        table: &Table,
        after: Option<&[String]>,
        limit: usize,
        wrap: fn(&str) -> String,
    ) -> Result<Page, SourceError> {
        let sql = row_query(table, after, limit, wrap);
        let what = format!("reading table {} of d1://{}", table.name, self.name);
        let rows: Tuples = self
            .raw(&sql, &what)
            .await?
            .into_iter()
            .next()
            .unwrap_or_default();
        checked(rows, table)
    }
}

/// The page query as D1 is asked it: a row travels as one string, one JSON value a row instead of
/// one a column, less work for D1 (which serves one query at a time) and for the parser.
fn row_query(
    table: &Table,
    after: Option<&[String]>,
    limit: usize,
    wrap: fn(&str) -> String,
) -> String {
    page_query(table, after, limit, wrap, "||','||")
}

/// A page whose rows arrive as one string each (`quote(a)||','||quote(b)`), split into literals
/// as the parser hands each string over: the page is held once, never as strings and again as
/// literals. Every row must split into as many literals as the first.
#[derive(Debug, Default)]
struct Tuples(Page);

impl<'de> Deserialize<'de> for Tuples {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Tuples, D::Error> {
        Page::deserialize_with(deserializer, |page, row| {
            for literal in split_row(row) {
                page.push(normalize_literal(literal));
            }
        })
        .map(Tuples)
    }
}

/// The page of `table` in `rows`, once its width is checked.
fn checked(rows: Tuples, table: &Table) -> Result<Page, SourceError> {
    let page = rows.0;
    if page.is_empty() {
        return Ok(Page::new(table.columns.len()));
    }
    if page.width() != table.columns.len() {
        return Err(SourceError::Other(format!(
            "D1 answered rows of {} literals for table {} of {} columns",
            page.width(),
            table.name,
            table.columns.len()
        )));
    }
    Ok(page)
}

#[async_trait]
impl Source for D1Source {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            kind: "d1".to_string(),
            database_id: Some(self.id.clone()),
            name: Some(self.name.clone()),
            bookmark: None,
        }
    }

    async fn query(&self, statements: &[String]) -> Result<Vec<Vec<Vec<Cell>>>, SourceError> {
        let mut answers = Vec::with_capacity(statements.len());
        let what = format!("reading the catalog of d1://{}", self.name);
        for chunk in statements.chunks(STATEMENTS_PER_REQUEST) {
            let results: Vec<Vec<Vec<Value>>> = self.statements(chunk, &what).await?;
            for rows in results {
                answers.push(
                    rows.into_iter()
                        .map(|row| row.into_iter().map(cell).collect())
                        .collect::<Result<Vec<Vec<Cell>>, SourceError>>()?,
                );
            }
        }
        Ok(answers)
    }

    async fn page(
        &self,
        table: &Table,
        after: Option<&[String]>,
        limit: usize,
    ) -> Result<Page, SourceError> {
        let page = self.literal_page(table, after, limit, quoted_cell).await?;
        self.readable(page, table, after, limit).await
    }

    /// Every first page in one `/raw` request of several statements (D1 answers each in turn),
    /// as many statements a request as fit under D1's statement and request limits.
    async fn first_pages(&self, tables: &[&Table], limit: usize) -> Result<Vec<Page>, SourceError> {
        let queries: Vec<String> = tables
            .iter()
            .map(|t| row_query(t, None, limit, quoted_cell))
            .collect();
        let mut pages = Vec::with_capacity(tables.len());
        let mut start = 0;
        while start < tables.len() {
            let (mut end, mut length) = (start, 0);
            while end < tables.len()
                && end - start < STATEMENTS_PER_REQUEST
                && (end == start || length + queries[end].len() + 2 <= MAX_REQUEST_SQL)
            {
                length += queries[end].len() + 2;
                end += 1;
            }
            let what = format!("reading {} tables of d1://{}", end - start, self.name);
            let answers: Vec<Tuples> = self.statements(&queries[start..end], &what).await?;
            for (table, rows) in tables[start..end].iter().zip(answers) {
                let page = checked(rows, table)?;
                pages.push(self.readable(page, table, None, limit).await?);
            }
            start = end;
        }
        Ok(pages)
    }

    /// Large pages: each request is a round trip and one of the 1,200 requests Cloudflare allows
    /// in five minutes, and 4 MiB answers stay far below D1's limits.
    fn page_bytes(&self) -> usize {
        4 * 1024 * 1024
    }

    async fn bookmark(&self) -> Result<Option<String>, SourceError> {
        let path = self
            .api
            .account_path(&format!("d1/database/{}/time_travel/bookmark", self.id));
        match self
            .api
            .result::<Bookmark>(Method::GET, &path, None, "reading the Time Travel bookmark")
            .await
        {
            Ok(b) => Ok(b.bookmark),
            // A token without access to Time Travel still makes a good backup.
            Err(e) if e.is_bad_input() => {
                tracing::warn!("no Time Travel bookmark recorded: {e}");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_ids_table() {
        for (text, id) in [
            ("c0ffee00-1234-4abc-8def-0123456789ab", true),
            ("C0FFEE00-1234-4ABC-8DEF-0123456789AB", true),
            ("my-db", false),
            ("c0ffee00-1234-4abc-8def-0123456789a", false),
            ("c0ffee00-1234-4abc-8def-0123456789ag", false),
            ("", false),
        ] {
            assert_eq!(is_database_id(text), id, "{text}");
        }
    }

    #[test]
    fn literals_table() {
        for (raw, want) in [
            ("Inf", "9.0e999"),
            ("-Inf", "-9.0e999"),
            ("9.0e+999", "9.0e+999"),
            ("'Inf'", "'Inf'"),
            ("1.5", "1.5"),
        ] {
            assert_eq!(normalize_literal(raw), want);
        }
    }

    #[test]
    fn split_rows_table() {
        for (row, want) in [
            ("1", vec!["1"]),
            ("1,NULL,'a'", vec!["1", "NULL", "'a'"]),
            ("'a,b',2", vec!["'a,b'", "2"]),
            ("'it''s, fine',''", vec!["'it''s, fine'", "''"]),
            ("'''',','", vec!["''''", "','"]),
            ("X'00ff',-1.5e+300", vec!["X'00ff'", "-1.5e+300"]),
            (
                "CAST(X'610062' AS TEXT),Inf",
                vec!["CAST(X'610062' AS TEXT)", "Inf"],
            ),
            ("'',", vec!["''", ""]),
        ] {
            assert_eq!(split_row(row).collect::<Vec<_>>(), want, "{row}");
        }
    }

    #[test]
    fn tuples_table() {
        for (json, want) in [
            (r#"[]"#, Ok(vec![])),
            (
                r#"[["1,'a'"],["2,NULL"]]"#,
                Ok(vec![vec!["1", "'a'"], vec!["2", "NULL"]]),
            ),
            (r#"[["-Inf,'x,y'"]]"#, Ok(vec![vec!["-9.0e999", "'x,y'"]])),
            (r#"[["1,'a'"],["2"]]"#, Err("different widths")),
            (r#"[[1]]"#, Err("invalid type")),
        ] {
            match (serde_json::from_str::<Tuples>(json), want) {
                (Ok(got), Ok(want)) => {
                    let rows: Vec<Vec<&str>> = got.0.rows().map(|r| r.iter().collect()).collect();
                    assert_eq!(rows, want, "{json}");
                }
                (Err(err), Err(message)) => {
                    assert!(err.to_string().contains(message), "{json}: {err}")
                }
                (got, want) => panic!("{json}: {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn catalog_cells_table() {
        for (json, want) in [
            ("null", Cell::Null),
            ("7", Cell::Integer(7)),
            ("-7", Cell::Integer(-7)),
            ("1.5", Cell::Real(1.5)),
            ("\"x\"", Cell::Text("x".into())),
            ("[0,255]", Cell::Blob(vec![0, 255])),
        ] {
            assert_eq!(
                cell(serde_json::from_str(json).unwrap()).unwrap(),
                want,
                "{json}"
            );
        }
        assert!(cell(serde_json::from_str("[256]").unwrap()).is_err());
        assert!(cell(serde_json::from_str("{}").unwrap()).is_err());
    }

    #[test]
    fn cell_expressions_read_back_in_sqlite() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE t(v); INSERT INTO t VALUES (NULL),(1),(1.5),('it''s'),(X'00ff'),(CAST(X'610062' AS TEXT)),(9e999),(-9223372036854775808),(9223372036854775807),(-0.0),('');",
        )
        .unwrap();
        for wrap in [quoted_cell as fn(&str) -> String, hex_text_cell] {
            let sql = format!("SELECT {} FROM t ORDER BY rowid", wrap("\"v\""));
            let literals: Vec<String> = conn
                .prepare(&sql)
                .unwrap()
                .query_map([], |r| r.get::<_, String>(0))
                .unwrap()
                .map(|r| normalize_literal(&r.unwrap()).to_string())
                .collect();
            for (i, literal) in literals.iter().enumerate() {
                let same: bool = conn
                    .query_row(
                        &format!(
                            "SELECT typeof(v)=typeof({literal}) AND (v IS {literal} OR CAST(v AS BLOB)=CAST({literal} AS BLOB)) FROM t WHERE rowid={}",
                            i + 1
                        ),
                        [],
                        |r| r.get(0),
                    )
                    .unwrap();
                assert!(same, "{literal}");
            }
        }
    }
}
