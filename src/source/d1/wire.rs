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
use futures::{StreamExt, TryStreamExt};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::source::{
    Affinity, Cell, FirstPage, Page, Row, Source, SourceError, SourceInfo, Table,
    fill_largest_rowids, key_columns, largest_rowid_query, max_page_bytes, page_query, row_key,
};
use crate::cloudflare::{Api, ApiError};
use crate::dump::value::{ValueRef, quote_ident, render, render_str};

/// Statements sent in one request (catalog queries, tables' first pages): one request is one
/// rate-limit token.
const STATEMENTS_PER_REQUEST: usize = 50;
/// Catalog requests in flight at once: D1 answers them in turn, so more would not come sooner.
const CATALOG_REQUESTS: usize = 4;
/// SQL in one `/raw` request, well under D1's 100,000-byte statement limit.
const MAX_REQUEST_SQL: usize = 90_000;
/// D1's longest string or BLOB (SQLite's `SQLITE_LIMIT_LENGTH` there), 2,000,000 bytes.
const MAX_LENGTH: usize = 2_000_000;
/// What a row read as one string may take of [`MAX_LENGTH`], with room for the commas.
const ROW_BUDGET: usize = MAX_LENGTH - 100_000;
/// Bytes of a large value one statement reads: its hex stays under [`MAX_LENGTH`].
const CHUNK_BYTES: usize = 900_000;
/// Full chunks in one request: an answer of about 16 MB of hex, and any value D1 can hold (at
/// most three chunks) read whole in one request, so in one state.
const CHUNKS_PER_REQUEST: usize = 9;
/// Hex one request of chunks may answer: [`CHUNKS_PER_REQUEST`] full chunks.
const CHUNK_ANSWER_BYTES: usize = 2 * CHUNKS_PER_REQUEST * CHUNK_BYTES;

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

/// The page query's cell. D1 answers one query at a time, so the less it does a cell the sooner
/// a page comes: text travels as itself behind its byte count, `T<bytes>:<text>` (no escaping,
/// no scan for NUL: [`split_row`] finds its end and the literal is written here), integers as
/// `CAST(.. AS TEXT)` (the same digits without `quote()`'s printf), reals, BLOBs and NULL as
/// `quote()` writes them. Text or a BLOB over `inline` bytes comes as a placeholder (see
/// [`large_cell`]).
pub fn quoted_cell(column: &str, affinity: Affinity, inline: usize) -> String {
    let bytes = format!("length(CAST({column} AS BLOB))");
    by_type(
        column,
        affinity,
        inline,
        format!("'T'||{bytes}||':'||{column}"),
        format!("CAST({column} AS TEXT)"),
    )
}

/// The cell of a page read again when its text did not arrive as D1 holds it: every text value as
/// its bytes in hex (placeholders as in [`quoted_cell`]).
pub fn hex_text_cell(column: &str, affinity: Affinity, inline: usize) -> String {
    by_type(
        column,
        affinity,
        inline,
        format!("'CAST(X'''||hex({column})||''' AS TEXT)'"),
        format!("quote({column})"),
    )
}

/// `CASE typeof(column) WHEN ..`: `text` for a text and `integer` for an integer, a text or BLOB
/// over `inline` bytes as its placeholder, a BLOB or a real as `quote()` writes it, NULL as
/// `NULL`; the storage classes tried in the order the column's affinity makes likely, since D1
/// compares type names for every cell until one matches.
fn by_type(
    column: &str,
    affinity: Affinity,
    inline: usize,
    text: String,
    integer: String,
) -> String {
    let bytes = format!("length(CAST({column} AS BLOB))");
    let text = format!("CASE WHEN {bytes}>{inline} THEN '?t'||{bytes} ELSE {text} END");
    let blob = format!("CASE WHEN {bytes}>{inline} THEN '?b'||{bytes} ELSE quote({column}) END");
    let real = format!("quote({column})");
    let branches = match affinity {
        Affinity::Integer | Affinity::Numeric => [
            ("integer", integer),
            ("real", real),
            ("text", text),
            ("blob", blob),
        ],
        Affinity::Text => [
            ("text", text),
            ("integer", integer),
            ("real", real),
            ("blob", blob),
        ],
        Affinity::Real => [
            ("real", real),
            ("integer", integer),
            ("text", text),
            ("blob", blob),
        ],
        Affinity::Blob => [
            ("blob", blob),
            ("text", text),
            ("integer", integer),
            ("real", real),
        ],
    };
    let whens: Vec<String> = branches
        .iter()
        .map(|(class, cell)| format!("WHEN '{class}' THEN {cell}"))
        .collect();
    format!("CASE typeof({column}) {} ELSE 'NULL' END", whens.join(" "))
}

/// The largest text or BLOB, in bytes, a page of a table `width` columns wide reads inline. D1
/// caps every string at [`MAX_LENGTH`], the row D1 sends as one string included; a literal is at
/// most twice its value's bytes plus 17 (`CAST(X'..' AS TEXT)`), so a row of values this size,
/// commas included, stays under the cap. Larger values are read apart, in chunks.
pub fn inline_bytes(width: usize) -> usize {
    (ROW_BUDGET / width.max(1)).saturating_sub(24) / 2
}

/// A value a page holds as a placeholder, `?t<bytes>` (text) or `?b<bytes>` (BLOB): `quote()`
/// writes nothing that starts with `?`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LargeCell {
    pub text: bool,
    pub bytes: usize,
}

/// The placeholder `literal` stands for, if it is one.
pub fn large_cell(literal: &str) -> Option<LargeCell> {
    let rest = literal.strip_prefix('?')?;
    let text = match rest.as_bytes().first()? {
        b't' => true,
        b'b' => false,
        _ => return None,
    };
    let bytes = rest[1..].parse().ok()?;
    Some(LargeCell { text, bytes })
}

/// Where a large value sits in a page.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LargeAt {
    pub row: usize,
    pub column: usize,
    pub cell: LargeCell,
}

/// How many leading rows of `page` to keep so that, its large values read, it holds about
/// `budget` bytes of literals (at least one row), and the large values among them.
pub fn plan_large(page: &Page, budget: usize) -> (usize, Vec<LargeAt>) {
    let (mut kept, mut total, mut large) = (0, 0usize, Vec::new());
    for (row, cells) in page.rows().enumerate() {
        if kept > 0 && total >= budget {
            break;
        }
        for (column, literal) in cells.iter().enumerate() {
            total += match large_cell(literal) {
                Some(cell) => {
                    large.push(LargeAt { row, column, cell });
                    2 * cell.bytes + 17
                }
                None => literal.len(),
            };
        }
        kept += 1;
    }
    (kept, large)
}

/// One statement reading a chunk of a large value: whose value (its index), how many bytes it
/// answers, and its SQL.
type Chunk = (usize, usize, String);

/// The statements that read `value` (the `index`th large value) of `table` in chunks of
/// [`CHUNK_BYTES`], each answering one row of one hex string; the row is found by its key
/// literals in `row`.
fn chunk_statements(table: &Table, row: Row<'_>, index: usize, value: &LargeAt) -> Vec<Chunk> {
    let column = quote_ident(&table.columns[value.column]);
    let keys = key_columns(table);
    let literals = row_key(table, row);
    (0..value.cell.bytes.div_ceil(CHUNK_BYTES).max(1))
        .map(|k| {
            let start = k * CHUNK_BYTES;
            let sql = format!(
                "SELECT hex(substr(CAST({column} AS BLOB),{},{CHUNK_BYTES})) FROM {} WHERE ({})=({})",
                start + 1,
                quote_ident(&table.name),
                keys.join(","),
                literals.join(",")
            );
            (index, CHUNK_BYTES.min(value.cell.bytes - start), sql)
        })
        .collect()
}

/// The chunk statements of each request, as ranges of `chunks`: within D1's statement and SQL
/// limits and [`CHUNK_ANSWER_BYTES`] of answer, and a value's chunks in one request whenever
/// they fit in one.
pub fn chunk_requests(chunks: &[Chunk]) -> Vec<std::ops::Range<usize>> {
    let mut requests = Vec::new();
    let (mut start, mut sql, mut answer) = (0, 0, 0);
    for (i, (value, bytes, text)) in chunks.iter().enumerate() {
        let starts_value = i == 0 || chunks[i - 1].0 != *value;
        let whole: usize = chunks[i..]
            .iter()
            .take_while(|c| starts_value && c.0 == *value)
            .map(|c| 2 * c.1)
            .sum();
        let full = i - start == STATEMENTS_PER_REQUEST
            || sql + text.len() + 2 > MAX_REQUEST_SQL
            || answer + 2 * bytes > CHUNK_ANSWER_BYTES
            || (whole <= CHUNK_ANSWER_BYTES && answer + whole > CHUNK_ANSWER_BYTES);
        if i > start && full {
            requests.push(start..i);
            (start, sql, answer) = (i, 0, 0);
        }
        sql += text.len() + 2;
        answer += 2 * bytes;
    }
    if start < chunks.len() {
        requests.push(start..chunks.len());
    }
    requests
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

/// A cell of a row D1 sent as one string.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RowCell<'a> {
    /// A literal as `quote()` or `CAST` wrote it, which holds no comma.
    Literal(&'a str),
    /// A text value itself, sent as `T<bytes>:<text>`.
    Text(&'a str),
    /// A text whose byte count does not match what arrived (D1 replaced bytes that are not UTF-8,
    /// or cut the string short); the rest of the row cannot be split.
    Garbled,
}

/// The cells of a row D1 sent as one string (see [`quoted_cell`]), separated by commas: a text
/// value ends where its byte count says, and no other cell holds a comma.
pub fn split_row(row: &str) -> impl Iterator<Item = RowCell<'_>> {
    let mut rest = Some(row);
    std::iter::from_fn(move || {
        let text = rest.take()?;
        if let Some(sent) = text.strip_prefix('T') {
            let cell = sent
                .split_once(':')
                .and_then(|(bytes, tail)| Some((bytes.parse::<usize>().ok()?, tail)))
                .and_then(|(n, tail)| Some((tail.get(..n)?, &tail[n..])))
                .and_then(|(value, after)| match after.as_bytes().first() {
                    None => Some(value),
                    Some(b',') => {
                        rest = Some(&after[1..]);
                        Some(value)
                    }
                    Some(_) => None,
                });
            return Some(cell.map_or(RowCell::Garbled, RowCell::Text));
        }
        Some(match text.split_once(',') {
            Some((literal, after)) => {
                rest = Some(after);
                RowCell::Literal(literal)
            }
            None => RowCell::Literal(text),
        })
    })
}

/// Pushes the cells of a row D1 sent as one string into `page`, each as a literal SQLite reads
/// back exactly; false when a text did not arrive as D1 holds it (garbled, or holding U+FFFD,
/// which D1 writes for bytes that are not UTF-8): the page must be read again as hex.
fn push_row(page: &mut Page, row: &str) -> bool {
    for cell in split_row(row) {
        match cell {
            RowCell::Literal(literal) => page.push(normalize_literal(literal)),
            RowCell::Text(text) if !holds_replacement(text) => {
                page.push_with(|out| render_str(text, out))
            }
            RowCell::Text(_) | RowCell::Garbled => return false,
        }
    }
    true
}

/// Whether `text` holds U+FFFD (bytes EF BF BD), by a vectorized search for its first byte, which
/// most text lacks.
fn holds_replacement(text: &str) -> bool {
    memchr::memchr(0xEF, text.as_bytes()).is_some() && text.contains('\u{FFFD}')
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

    /// `page` as read with [`quoted_cell`], or read again with every text as hex when a text did
    /// not arrive as D1 holds it (not valid UTF-8, which its JSON cannot carry).
    async fn readable(
        &self,
        page: Page,
        table: &Table,
        after: Option<&[String]>,
        upto: Option<i64>,
        limit: usize,
    ) -> Result<Page, SourceError> {
        if page.is_garbled() {
            return self
                .literal_page(table, after, upto, limit, hex_text_cell)
                .await;
        }
        Ok(page)
    }

    /// `page` with its large values read in chunks, cut short after the row that takes it to
    /// [`max_page_bytes`] (the rows after it come in the next page).
    async fn with_large_values(&self, page: Page, table: &Table) -> Result<Page, SourceError> {
        if !page.contains('?') {
            return Ok(page);
        }
        let (kept, large) = plan_large(&page, max_page_bytes(self));
        if large.is_empty() {
            return Ok(page);
        }
        if let Some(key) = large.iter().find(|v| table.key.contains(&v.column)) {
            return Err(SourceError::Other(format!(
                "table {} of d1://{} has a key value of {} bytes, too long to page past in D1's 100,000-byte statements",
                table.name, self.name, key.cell.bytes
            )));
        }
        let chunks: Vec<Chunk> = large
            .iter()
            .enumerate()
            .flat_map(|(i, value)| chunk_statements(table, page.row(value.row), i, value))
            .collect();
        let what = format!(
            "reading {} large values of table {} of d1://{}",
            large.len(),
            table.name,
            self.name
        );
        let mut hex = vec![String::new(); large.len()];
        for request in chunk_requests(&chunks) {
            let sql: Vec<String> = chunks[request.clone()]
                .iter()
                .map(|c| c.2.clone())
                .collect();
            let answers: Vec<Vec<(String,)>> = self.statements(&sql, &what).await?;
            for (chunk, rows) in chunks[request].iter().zip(answers) {
                match rows.as_slice() {
                    [(part,)] => hex[chunk.0].push_str(part),
                    _ => return Err(changed(table, &self.name)),
                }
            }
        }
        let mut out = Page::new(page.width());
        let mut values = large.iter().zip(hex).peekable();
        for (r, row) in page.rows().take(kept).enumerate() {
            for (c, literal) in row.iter().enumerate() {
                match values.next_if(|(at, _)| at.row == r && at.column == c) {
                    Some((at, hex)) if hex.len() == 2 * at.cell.bytes => {
                        if at.cell.text {
                            let bytes =
                                hex::decode(&hex).map_err(|_| changed(table, &self.name))?;
                            out.push_with(|text| render(ValueRef::Text(&bytes), text));
                        } else {
                            // D1's `hex()` is already the BLOB's literal.
                            out.push_with(|text| {
                                text.push_str("X'");
                                text.push_str(&hex);
                                text.push('\'');
                            });
                        }
                    }
                    Some(_) => return Err(changed(table, &self.name)),
                    None => out.push(literal),
                }
            }
        }
        if kept < page.len() {
            out.mark_cut();
        }
        Ok(out)
    }

    async fn literal_page(
        &self,
        table: &Table,
        after: Option<&[String]>,
        upto: Option<i64>,
        limit: usize,
        wrap: Wrap,
    ) -> Result<Page, SourceError> {
        let sql = row_query(table, after, upto, limit, wrap);
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
/// one a column, less work for D1 (which serves one query at a time) and for the parser. A rowid
/// table's key is its rowid, always an integer, so its cell skips the type dispatch.
fn row_query(
    table: &Table,
    after: Option<&[String]>,
    upto: Option<i64>,
    limit: usize,
    wrap: Wrap,
) -> String {
    let inline = inline_bytes(table.columns.len());
    let rowid = table.rowid_key();
    let cell = |i: usize, c: &str| match rowid {
        Some(rowid) if rowid == i => format!("CAST({c} AS TEXT)"),
        _ => wrap(c, table.affinities[i], inline),
    };
    page_query(table, after, upto, limit, cell, one_string)
}

/// A row's cells as one string, `a||','||b||...`, grouped as a balanced tree. SQLite nests each
/// `||` inside the one before it, and D1 refuses an expression more than 100 deep ("Expression
/// tree is too large (maximum depth 100)"), which a row of 50 columns joined left to right
/// already is; balanced, a row of SQLite's most columns (2,000) nests 22 deep.
fn one_string(cells: &[String]) -> String {
    fn grouped(cells: &[String]) -> String {
        match cells {
            [one] => one.clone(),
            _ => format!("({})", one_string(cells)),
        }
    }
    match cells {
        [] => String::new(),
        [one] => one.clone(),
        _ => {
            let (left, right) = cells.split_at(cells.len() / 2);
            format!("{}||','||{}", grouped(left), grouped(right))
        }
    }
}

/// A page query's cell expression: [`quoted_cell`] or [`hex_text_cell`].
type Wrap = fn(&str, Affinity, usize) -> String;

/// The error when a large value no longer is what its page said: the row changed or went away
/// between the two reads.
fn changed(table: &Table, database: &str) -> SourceError {
    SourceError::Other(format!(
        "a large value of table {} in d1://{database} changed while it was read; run the backup again",
        table.name
    ))
}

/// A page whose rows arrive as one string each, split into literals as the parser hands each
/// string over ([`push_row`]): the page is held once, never as strings and again as literals.
/// Every row must split into as many literals as the first.
#[derive(Debug, Default)]
struct Tuples(Page);

impl<'de> Deserialize<'de> for Tuples {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Tuples, D::Error> {
        Page::deserialize_with(deserializer, push_row).map(Tuples)
    }
}

/// The page of `table` in `rows`, once its width is checked (a garbled page is read again whole,
/// so it is kept as it is).
fn checked(rows: Tuples, table: &Table) -> Result<Page, SourceError> {
    let page = rows.0;
    if page.is_garbled() {
        return Ok(page);
    }
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

    /// Many statements (the largest rowids of a batch of tables) go [`STATEMENTS_PER_REQUEST`] a
    /// request, [`CATALOG_REQUESTS`] requests at a time: their answers are small and quick, so
    /// they would mostly wait out round trips.
    async fn query(&self, statements: &[String]) -> Result<Vec<Vec<Vec<Cell>>>, SourceError> {
        let what = format!("reading the catalog of d1://{}", self.name);
        let requests: Vec<_> = statements
            .chunks(STATEMENTS_PER_REQUEST)
            .map(|chunk| self.statements::<Vec<Vec<Value>>>(chunk, &what))
            .collect();
        let chunks: Vec<Vec<Vec<Vec<Value>>>> = futures::stream::iter(requests)
            .buffered(CATALOG_REQUESTS)
            .try_collect()
            .await?;
        chunks
            .into_iter()
            .flatten()
            .map(|rows| {
                rows.into_iter()
                    .map(|row| row.into_iter().map(cell).collect())
                    .collect()
            })
            .collect()
    }

    async fn page(
        &self,
        table: &Table,
        after: Option<&[String]>,
        upto: Option<i64>,
        limit: usize,
    ) -> Result<Page, SourceError> {
        let page = self
            .literal_page(table, after, upto, limit, quoted_cell)
            .await?;
        let page = self.readable(page, table, after, upto, limit).await?;
        self.with_large_values(page, table).await
    }

    /// Every first page in one `/raw` request of several statements (D1 answers each in turn),
    /// as many statements a request as fit under D1's statement and request limits. The largest
    /// rowid of a table keyed by its rowid is read in the same request, right after its page,
    /// when the request has room for it (a batch of up to 25 such tables); otherwise it is asked
    /// after, in one request, for the tables whose pages went on. Asking it of every table would
    /// take requests from databases of many small tables.
    async fn first_pages(
        &self,
        tables: &[&Table],
        limit: usize,
    ) -> Result<Vec<FirstPage>, SourceError> {
        let pages: Vec<String> = tables
            .iter()
            .map(|t| row_query(t, None, None, limit, quoted_cell))
            .collect();
        let mut firsts = Vec::with_capacity(tables.len());
        let mut start = 0;
        while start < tables.len() {
            let (mut end, mut length) = (start, 0);
            while end < tables.len()
                && end - start < STATEMENTS_PER_REQUEST
                && (end == start || length + pages[end].len() + 2 <= MAX_REQUEST_SQL)
            {
                length += pages[end].len() + 2;
                end += 1;
            }
            let batch = &tables[start..end];
            let largest: Vec<Option<String>> =
                batch.iter().map(|t| largest_rowid_query(t)).collect();
            let extra = largest.iter().flatten();
            let room = end - start + extra.clone().count() <= STATEMENTS_PER_REQUEST
                && length + extra.map(|q| q.len() + 2).sum::<usize>() <= MAX_REQUEST_SQL;
            let mut sql = Vec::new();
            for (page, largest) in pages[start..end].iter().zip(&largest) {
                sql.push(page.clone());
                sql.extend(largest.iter().filter(|_| room).cloned());
            }
            let what = format!("reading {} tables of d1://{}", end - start, self.name);
            // D1 answers every statement sent, or the request fails (`statements`).
            let mut answers = self.statements::<Tuples>(&sql, &what).await?.into_iter();
            for (table, largest) in batch.iter().zip(&largest) {
                let rows = answers.next().unwrap_or_default();
                let page = self
                    .readable(checked(rows, table)?, table, None, None, limit)
                    .await?;
                let page = self.with_large_values(page, table).await?;
                let read = largest
                    .as_ref()
                    .filter(|_| room)
                    .and_then(|_| answers.next());
                let largest_rowid = read
                    .filter(|_| page.goes_on(limit))
                    .and_then(|rows| rows.0.last()?.cell(0).parse().ok());
                firsts.push(FirstPage {
                    page,
                    largest_rowid,
                });
            }
            start = end;
        }
        fill_largest_rowids(self, tables, &mut firsts, limit).await?;
        Ok(firsts)
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
        use RowCell::{Garbled, Literal as L, Text as T};
        for (row, want) in [
            ("1", vec![L("1")]),
            ("1,NULL,T1:a", vec![L("1"), L("NULL"), T("a")]),
            ("T3:a,b,2", vec![T("a,b"), L("2")]),
            ("T10:it's, fine,T0:", vec![T("it's, fine"), T("")]),
            ("T3:T1:,T1:,", vec![T("T1:"), T(",")]),
            ("T5:caf\u{e9},T2:\0\n", vec![T("caf\u{e9}"), T("\0\n")]),
            ("X'00ff',-1.5e+300", vec![L("X'00ff'"), L("-1.5e+300")]),
            (
                "CAST(X'610062' AS TEXT),Inf",
                vec![L("CAST(X'610062' AS TEXT)"), L("Inf")],
            ),
            ("T0:,", vec![T(""), L("")]),
            ("1,", vec![L("1"), L("")]),
            // D1 changed a text's bytes on the way: the count no longer lands on its end.
            ("T2:\u{FFFD},1", vec![Garbled]),
            ("T1:\u{FFFD}", vec![Garbled]),
            ("T3:ab,1", vec![Garbled]),
            ("T9:ab", vec![Garbled]),
            ("1,T2ab", vec![L("1"), Garbled]),
            ("Tx:ab", vec![Garbled]),
        ] {
            assert_eq!(split_row(row).collect::<Vec<_>>(), want, "{row:?}");
        }
    }

    #[test]
    fn tuples_table() {
        for (json, want) in [
            (r#"[]"#, Ok((vec![], false))),
            (
                r#"[["1,T1:a"],["2,NULL"]]"#,
                Ok((vec![vec!["1", "'a'"], vec!["2", "NULL"]], false)),
            ),
            (
                r#"[["-Inf,T6:x,y'z\u0000"]]"#,
                Ok((
                    vec![vec!["-9.0e999", "CAST(X'782C79277A00' AS TEXT)"]],
                    false,
                )),
            ),
            (
                r#"[["1,T5:it's,"]]"#,
                Ok((vec![vec!["1", "'it''s,'"]], false)),
            ),
            // Rows whose text D1 changed are left out, and the page is marked for a second read.
            (
                r#"[["1,T1:\ufffd"],["2,T1:b"],["3,T2:\ufffd"]]"#,
                Ok((vec![vec!["2", "'b'"]], true)),
            ),
            (r#"[["1,T1:a"],["2"]]"#, Err("different widths")),
            (r#"[[1]]"#, Err("invalid type")),
        ] {
            match (serde_json::from_str::<Tuples>(json), want) {
                (Ok(got), Ok((want, garbled))) => {
                    let rows: Vec<Vec<&str>> = got.0.rows().map(|r| r.iter().collect()).collect();
                    assert_eq!(rows, want, "{json}");
                    assert_eq!(got.0.is_garbled(), garbled, "{json}");
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

    /// Column `v` of table `t` as the page query's cell expression `wrap` reads it, made literals
    /// as a D1 answer is.
    fn cells_of_t(
        conn: &rusqlite::Connection,
        wrap: impl Fn(&str, usize) -> String,
        inline: usize,
    ) -> Vec<String> {
        let sql = format!("SELECT {} FROM t ORDER BY rowid", wrap("\"v\"", inline));
        let mut page = Page::new(1);
        for sent in conn
            .prepare(&sql)
            .unwrap()
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
        {
            assert!(push_row(&mut page, &sent.unwrap()));
        }
        page.rows().map(|r| r.cell(0).to_string()).collect()
    }

    #[test]
    fn row_queries_read_the_rowid_without_type_dispatch() {
        let table = |columns: &[&str], key: Vec<usize>, without_rowid: bool| Table {
            name: "t".into(),
            create_sql: String::new(),
            module: None,
            without_rowid,
            columns: columns.iter().map(|c| c.to_string()).collect(),
            affinities: vec![Affinity::Text; columns.len()],
            key,
            data: crate::source::DataMode::Rows,
            sequence: None,
        };
        let v = quoted_cell("\"v\"", Affinity::Text, inline_bytes(2));
        let k = quoted_cell("\"k\"", Affinity::Text, inline_bytes(2));
        for (t, cells) in [
            (
                table(&["rowid", "v"], vec![0], false),
                format!("CAST(\"rowid\" AS TEXT)||','||{v}"),
            ),
            (
                table(&["v", "id"], vec![1], false),
                format!("{v}||','||CAST(\"id\" AS TEXT)"),
            ),
            (table(&["k", "v"], vec![0], true), format!("{k}||','||{v}")),
        ] {
            let sql = row_query(&t, None, None, 10, quoted_cell);
            assert!(sql.starts_with(&format!("SELECT {cells} FROM")), "{sql}");
        }
    }

    /// Rows of every width up to SQLite's most columns stay within D1's expression depth of 100
    /// (the left-to-right join did not past 50 columns), and read back as the same string.
    #[test]
    fn wide_rows_stay_within_d1s_expression_depth() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_EXPR_DEPTH, 100)
            .unwrap();
        for width in [1, 2, 3, 49, 50, 51, 64, 100, 1000, 2000] {
            let cells: Vec<String> = (0..width).map(|i| format!("quote({i})")).collect();
            let want: Vec<String> = (0..width).map(|i| i.to_string()).collect();
            let got: String = conn
                .query_row(&format!("SELECT {}", one_string(&cells)), [], |r| r.get(0))
                .unwrap_or_else(|e| panic!("{width} columns: {e}"));
            assert_eq!(got, want.join(","), "{width} columns");
        }
        let flat: Vec<String> = (0..51).map(|i| format!("quote({i})")).collect();
        let err = conn
            .query_row(&format!("SELECT {}", flat.join("||','||")), [], |r| {
                r.get::<_, String>(0)
            })
            .unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
    }

    #[test]
    fn cell_expressions_read_back_in_sqlite() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE t(v); INSERT INTO t VALUES (NULL),(1),(1.5),('it''s'),(X'00ff'),(CAST(X'610062' AS TEXT)),(9e999),(-9223372036854775808),(9223372036854775807),(-0.0),(''),('a,''b'),('T3:x,'),(CAST(X'00' AS TEXT)),('日本'),(-9e999),(1e-300),(X'');",
        )
        .unwrap();
        let affinities = [
            Affinity::Integer,
            Affinity::Text,
            Affinity::Blob,
            Affinity::Real,
            Affinity::Numeric,
        ];
        let wraps = [quoted_cell as Wrap, hex_text_cell];
        for (wrap, affinity) in wraps.into_iter().flat_map(|w| affinities.map(|a| (w, a))) {
            let literals = cells_of_t(&conn, |c, inline| wrap(c, affinity, inline), 1000);
            assert_eq!(literals.len(), 18);
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

    #[test]
    fn inline_bytes_keep_a_row_under_d1_length_limit() {
        for width in [1, 2, 7, 60, 100, 2000] {
            let inline = inline_bytes(width);
            assert!(inline > 0, "{width}");
            // Every cell at its longest literal (hex text), and the commas between them.
            let row = width * (2 * inline + 17) + width - 1;
            assert!(row < MAX_LENGTH, "{width}: {row}");
        }
        assert_eq!(inline_bytes(1), 949_988);
        assert_eq!(inline_bytes(0), inline_bytes(1));
    }

    #[test]
    fn large_cells_table() {
        for (literal, want) in [
            ("?t12", Some((true, 12))),
            ("?b2000000", Some((false, 2_000_000))),
            ("?x1", None),
            ("?t", None),
            ("?b-1", None),
            ("'?t12'", None),
            ("X'3F'", None),
            ("12", None),
            ("", None),
        ] {
            let got = large_cell(literal).map(|c| (c.text, c.bytes));
            assert_eq!(got, want, "{literal}");
        }
    }

    fn page_of(rows: &[&[&str]]) -> Page {
        let mut page = Page::new(rows[0].len());
        for row in rows {
            for cell in *row {
                page.push(cell);
            }
        }
        page
    }

    #[test]
    fn plan_large_table() {
        let at = |row, column, text, bytes| LargeAt {
            row,
            column,
            cell: LargeCell { text, bytes },
        };
        for (rows, budget, want) in [
            // Nothing large: every row stays.
            (vec![&["1", "'a'"][..], &["2", "'b'"]], 100, (2, vec![])),
            // A large value counts as its literal would (2 bytes a byte, plus 17).
            (
                vec![&["1", "?b40"][..], &["2", "?t10"], &["3", "NULL"]],
                200,
                (3, vec![at(0, 1, false, 40), at(1, 1, true, 10)]),
            ),
            // The row that reaches the budget is the last one kept.
            (
                vec![&["1", "?b100"][..], &["2", "?b100"], &["3", "?b1"]],
                300,
                (2, vec![at(0, 1, false, 100), at(1, 1, false, 100)]),
            ),
            // One row always stays, however large.
            (
                vec![&["1", "?b1000"][..], &["2", "?b1"]],
                10,
                (1, vec![at(0, 1, false, 1000)]),
            ),
            // A quoted '?t1' is text, not a placeholder.
            (vec![&["1", "'?t1'"][..]], 10, (1, vec![])),
        ] {
            assert_eq!(plan_large(&page_of(&rows), budget), want, "{rows:?}");
        }
    }

    #[test]
    fn chunk_requests_table() {
        let sql = |n: usize| "x".repeat(n);
        let chunks = |spec: &[(usize, usize, usize)]| -> Vec<Chunk> {
            spec.iter().map(|&(v, b, s)| (v, b, sql(s))).collect()
        };
        let full = CHUNK_BYTES;
        for (spec, want) in [
            (vec![], vec![]),
            (vec![(0, 10, 100)], vec![(0, 1)]),
            // Small values share a request, up to 50 statements.
            (
                vec![(0, 10, 100); 120],
                vec![(0, 50), (50, 100), (100, 120)],
            ),
            // Nine full chunks fill a request's answer.
            (vec![(0, full, 100); 12], vec![(0, 9), (9, 12)]),
            // A value's chunks go together when they fit: four values of two full chunks fill
            // a request but for one chunk, and the fifth value starts the next one whole.
            (
                (0..5)
                    .flat_map(|v| [(v, full, 100), (v, full, 100)])
                    .collect(),
                vec![(0, 8), (8, 10)],
            ),
            // A value too large for one request is split.
            (vec![(0, full, 100); 10], vec![(0, 9), (9, 10)]),
            // No more SQL than D1 takes in one request.
            (vec![(0, 10, 40_000); 3], vec![(0, 2), (2, 3)]),
        ] {
            let got: Vec<(usize, usize)> = chunk_requests(&chunks(&spec))
                .iter()
                .map(|r| (r.start, r.end))
                .collect();
            assert_eq!(got, want, "{spec:?}");
        }
    }

    #[test]
    fn large_values_come_as_placeholders_in_sqlite() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE t(v); INSERT INTO t VALUES (zeroblob(11)),(zeroblob(10)),(replace(hex(zeroblob(3)),'0','é')),(CAST(zeroblob(11) AS TEXT)),('x'),(12345678901234);",
        )
        .unwrap();
        for wrap in [quoted_cell as Wrap, hex_text_cell] {
            let literals = cells_of_t(&conn, |c, inline| wrap(c, Affinity::Blob, inline), 10);
            assert_eq!(literals[0], "?b11");
            assert_eq!(literals[1], "X'00000000000000000000'");
            // Six two-byte characters: twelve bytes.
            assert_eq!(literals[2], "?t12");
            assert_eq!(literals[3], "?t11");
            assert_eq!(literals[5], "12345678901234");
        }
    }
}
