//! Cloudflare D1 over its REST API as a source: the database found by name or id, the catalog
//! and keyset pages read through `/raw`, the Time Travel bookmark, and (in [`import`]) a restore
//! through the import API.
//!
//! What the SQL sent to `/raw` says and how its answers become lossless literals is the wire
//! contract, kept pure in [`wire`]; this module makes the requests and decides what to do with
//! the answers (read a page again as hex, read its large values apart, cut it short).
//!
//! Each page is one request, a keyset query: rows read stay at the row count (plus the catalog),
//! never the quadratic cost of `OFFSET`. D1 has no read transaction across requests, so the backup
//! is not one snapshot of a database under writes; the Time Travel bookmark taken at the start is
//! recorded so the exact moment can be restored with `wrangler d1 time-travel restore`.

pub mod import;
mod wire;

use crate::error::{Classify, Kind};
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use self::wire::{
    Chunk, STATEMENTS_PER_REQUEST, Tuples, Wrap, cell, checked, chunk_requests, chunk_statements,
    first_page_requests, hex_text_cell, plan_large, quoted_cell, row_query, with_large,
};
use super::{
    FirstPage, Source, SourceError, fill_largest_rowids, largest_rowid_query, max_page_bytes,
};
use crate::model::{Cell, Page, SourceInfo, Table};
use crate::remote::cloudflare::{Api, ApiError};

/// Catalog requests in flight at once: D1 answers them in turn, so more would not come sooner.
const CATALOG_REQUESTS: usize = 4;

/// One D1 database of the account, found by [`D1Source::connect`].
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
fn is_database_id(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
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

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The database's own objects (`(type, name)`), D1's and SQLite's internals left out.
    pub(crate) async fn user_objects(&self) -> Result<Vec<(String, String)>, SourceError> {
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
        if !page.is_garbled() {
            return Ok(page);
        }
        let page = self
            .literal_page(table, after, upto, limit, hex_text_cell)
            .await?;
        if page.is_garbled() {
            return Err(SourceError::Other(format!(
                "D1 answered rows of table {} of d1://{} that d1r2 cannot read exactly",
                table.name, self.name
            )));
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
        with_large(&page, kept, &large, hex).ok_or_else(|| changed(table, &self.name))
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

/// The error when a large value no longer is what its page said: the row changed or went away
/// between the two reads.
fn changed(table: &Table, database: &str) -> SourceError {
    SourceError::Other(format!(
        "a large value of table {} in d1://{database} changed while it was read; run the backup again",
        table.name
    ))
}

#[async_trait]
impl Source for D1Source {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            kind: "d1".to_string(),
            database_id: Some(self.id.clone()),
            name: Some(self.name.clone()),
            ..SourceInfo::default()
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
        let largest: Vec<Option<String>> = tables.iter().map(|t| largest_rowid_query(t)).collect();
        let mut firsts = Vec::with_capacity(tables.len());
        for request in first_page_requests(&pages, &largest) {
            let sql = request.statements(&pages, &largest);
            let what = format!(
                "reading {} tables of d1://{}",
                request.tables.len(),
                self.name
            );
            // D1 answers every statement sent, or the request fails (`statements`).
            let mut answers = self.statements::<Tuples>(&sql, &what).await?.into_iter();
            for i in request.tables {
                let table = tables[i];
                let rows = answers.next().unwrap_or_default();
                let page = self
                    .readable(checked(rows, table)?, table, None, None, limit)
                    .await?;
                let page = self.with_large_values(page, table).await?;
                let read = largest[i]
                    .as_ref()
                    .filter(|_| request.with_largest)
                    .and_then(|_| answers.next());
                let largest_rowid = read
                    .filter(|_| page.goes_on(limit))
                    .and_then(|rows| rows.0.last()?.cell(0).parse().ok());
                firsts.push(FirstPage {
                    page,
                    largest_rowid,
                });
            }
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
            Err(e) if e.kind() == Kind::BadInput => {
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
}
