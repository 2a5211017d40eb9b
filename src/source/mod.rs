//! Where backups are read from and restored to: the `Source` seam.
//!
//! A source answers catalog queries and hands out pages of rows as lossless SQL literals. The
//! catalog decisions ([`catalog`]) and the keyset page query ([`page_query`]) are shared, so a
//! local SQLite file and D1 over its REST API produce the same dump from the same data.

pub mod catalog;
pub mod d1;
pub mod sqlite;

use crate::error::{Classify, Kind};
use async_trait::async_trait;

use crate::model::{Cell, Page, Row, SourceInfo, Table};

use crate::model::value::quote_ident;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source database {0} does not exist")]
    Missing(String),
    #[error("{0} is not a SQLite database")]
    NotADatabase(String),
    #[error("no table named {0} in the source (see the table names with `sqlite3 DB .tables`)")]
    UnknownTable(String),
    #[error("--exclude-columns {0}")]
    BadColumn(String),
    #[error("reading the catalog: {0}")]
    Catalog(String),
    /// SQLite's message through [`crate::redact::sqlite`]: a page query holds the last key
    /// read, a value of the source.
    #[error("SQLite error on {path}: {message}")]
    Sqlite { path: String, message: String },
    #[error(transparent)]
    Api(crate::remote::cloudflare::ApiError),
    #[error("{0}")]
    Other(String),
}

/// The user pointed at the wrong database, table or column; reading it failing is a failure.
impl Classify for SourceError {
    fn kind(&self) -> Kind {
        match self {
            SourceError::Missing(_)
            | SourceError::NotADatabase(_)
            | SourceError::UnknownTable(_)
            | SourceError::BadColumn(_) => Kind::BadInput,
            SourceError::Api(e) => e.kind(),
            SourceError::Catalog(_) | SourceError::Sqlite { .. } | SourceError::Other(_) => {
                Kind::Failed
            }
        }
    }
}

/// A database a backup reads from.
#[async_trait]
pub trait Source: Send + Sync {
    /// Identity for the manifest.
    fn info(&self) -> SourceInfo;

    /// Runs read-only catalog statements and returns each one's rows.
    async fn query(&self, statements: &[String]) -> Result<Vec<Vec<Vec<Cell>>>, SourceError>;

    /// Up to `limit` rows of `table` whose key is greater than `after` (from the start when
    /// `None`) and, for a table keyed by its rowid, at most `upto`, in key order, each cell a
    /// lossless SQL literal for `table.columns`. A page stops short, marked [`Page::is_cut`],
    /// after the row that takes it to [`max_page_bytes`], so rows of any size keep memory
    /// bounded; a short page that is not cut ends the table ([`Page::goes_on`]).
    async fn page(
        &self,
        table: &Table,
        after: Option<&[String]>,
        upto: Option<i64>,
        limit: usize,
    ) -> Result<Page, SourceError>;

    /// The first page of each of `tables`, as `page(table, None, None, limit)` gives it, in one round
    /// trip where the source can: a database of many small tables then costs a request per
    /// batch of tables rather than one per table. With it, the largest rowid of each table keyed
    /// by its rowid whose page goes on ([`FirstPage`]).
    async fn first_pages(
        &self,
        tables: &[&Table],
        limit: usize,
    ) -> Result<Vec<FirstPage>, SourceError> {
        let mut firsts = Vec::with_capacity(tables.len());
        for table in tables {
            firsts.push(FirstPage {
                page: self.page(table, None, None, limit).await?,
                largest_rowid: None,
            });
        }
        fill_largest_rowids(self, tables, &mut firsts, limit).await?;
        Ok(firsts)
    }

    /// How many bytes of literals a page should hold. A local file reads cheaply, so pages stay
    /// small and memory low; every remote request costs a round trip and a rate-limit token.
    fn page_bytes(&self) -> usize {
        1024 * 1024
    }

    /// A point-in-time marker taken when the backup starts (D1 Time Travel), when the source has
    /// one.
    async fn bookmark(&self) -> Result<Option<String>, SourceError> {
        Ok(None)
    }
}

/// A table's first page, and what a backup splits the rest of a large table by.
#[derive(Debug, Clone, PartialEq)]
pub struct FirstPage {
    pub page: Page,
    /// The table's largest rowid when the table is keyed by its rowid and the page goes on
    /// (none otherwise): where the rowid windows that read the rest end. D1 reads it in the
    /// first page's request, a round trip less before a large table's rows.
    pub largest_rowid: Option<i64>,
}

/// The statement that reads the largest rowid of a table keyed by its rowid, as text: the last
/// entry of the table's B-tree, one row read, and no row for an empty table.
pub fn largest_rowid_query(table: &Table) -> Option<String> {
    table.rowid_key()?;
    let key = &key_columns(table)[0];
    Some(format!(
        "SELECT CAST({key} AS TEXT) FROM {} ORDER BY {key} DESC LIMIT 1",
        quote_ident(&table.name)
    ))
}

/// Reads, in one `query`, the largest rowid of every table of `firsts` keyed by its rowid whose
/// page goes on and came without it.
pub async fn fill_largest_rowids<S: Source + ?Sized>(
    source: &S,
    tables: &[&Table],
    firsts: &mut [FirstPage],
    limit: usize,
) -> Result<(), SourceError> {
    let missing: Vec<(usize, String)> = firsts
        .iter()
        .zip(tables)
        .enumerate()
        .filter(|(_, (first, _))| first.largest_rowid.is_none() && first.page.goes_on(limit))
        .filter_map(|(i, (_, table))| Some((i, largest_rowid_query(table)?)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let statements: Vec<String> = missing.iter().map(|(_, sql)| sql.clone()).collect();
    let answers = source.query(&statements).await?;
    for ((i, _), rows) in missing.iter().zip(answers) {
        firsts[*i].largest_rowid = match rows.first().and_then(|row| row.first()) {
            Some(Cell::Text(text)) => text.parse().ok(),
            _ => None,
        };
    }
    Ok(())
}

/// The literal bytes after which a source cuts a page short: twice what pages are sized to, so
/// a page sized from its table's average rows is rarely cut, and one of unusually large rows
/// holds at most this plus one row.
pub fn max_page_bytes(source: &(impl Source + ?Sized)) -> usize {
    2 * source.page_bytes()
}

/// The keyset page query: `SELECT cells FROM t WHERE key > after ORDER BY key LIMIT n`, with each
/// cell passed through `wrap` (given its index in `table.columns` and its quoted name: identity to
/// read native values, `quote` to read literals) and the cells joined by `join` ([`columns`] for a
/// column each, or one expression for a row as one string). Never `OFFSET`: D1 bills every row
/// read, and OFFSET reads every skipped row again.
pub fn page_query(
    table: &Table,
    after: Option<&[String]>,
    upto: Option<i64>,
    limit: usize,
    wrap: impl Fn(usize, &str) -> String,
    join: fn(&[String]) -> String,
) -> String {
    let cells: Vec<String> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| wrap(i, &quote_ident(c)))
        .collect();
    let key = key_columns(table);
    let mut sql = format!("SELECT {} FROM {}", join(&cells), quote_ident(&table.name));
    let mut bounds = Vec::new();
    if let Some(after) = after {
        if key.len() == 1 {
            bounds.push(format!("{}>{}", key[0], after[0]));
        } else {
            bounds.push(format!("({})>({})", key.join(","), after.join(",")));
        }
    }
    if let Some(upto) = upto {
        bounds.push(format!("{}<={upto}", key.join(",")));
    }
    if !bounds.is_empty() {
        sql.push_str(&format!(" WHERE {}", bounds.join(" AND ")));
    }
    sql.push_str(&format!(" ORDER BY {} LIMIT {limit}", key.join(",")));
    sql
}

/// Cells selected as a column each.
pub fn columns(cells: &[String]) -> String {
    cells.join(",")
}

/// The key columns of `table`, quoted, in key order.
pub fn key_columns(table: &Table) -> Vec<String> {
    table
        .key
        .iter()
        .map(|i| quote_ident(&table.columns[*i]))
        .collect()
}

/// The key literals of a row, to resume after it.
pub fn row_key(table: &Table, row: Row<'_>) -> Vec<String> {
    table.key.iter().map(|i| row.cell(*i).to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Affinity, DataMode};

    fn table(columns: &[&str], key: Vec<usize>) -> Table {
        Table {
            name: "t x".into(),
            create_sql: String::new(),
            module: None,
            without_rowid: false,
            columns: columns.iter().map(|s| s.to_string()).collect(),
            affinities: vec![Affinity::Blob; columns.len()],
            key,
            data: DataMode::Rows,
            sequence: None,
        }
    }

    #[test]
    fn page_queries_table() {
        let rowid = table(&["rowid", "a"], vec![0]);
        let pk = table(&["a", "b", "c"], vec![1, 0]);
        let quote = |_, c: &str| format!("quote({c})");
        let cases = [
            (
                page_query(&rowid, None, None, 100, |_, c| c.to_string(), columns),
                "SELECT \"rowid\",\"a\" FROM \"t x\" ORDER BY \"rowid\" LIMIT 100",
            ),
            (
                page_query(&rowid, Some(&["41".to_string()]), None, 5, quote, |c| {
                    c.join("||','||")
                }),
                "SELECT quote(\"rowid\")||','||quote(\"a\") FROM \"t x\" WHERE \"rowid\">41 ORDER BY \"rowid\" LIMIT 5",
            ),
            (
                page_query(
                    &rowid,
                    Some(&["41".to_string()]),
                    Some(90),
                    5,
                    quote,
                    columns,
                ),
                "SELECT quote(\"rowid\"),quote(\"a\") FROM \"t x\" WHERE \"rowid\">41 AND \"rowid\"<=90 ORDER BY \"rowid\" LIMIT 5",
            ),
            (
                page_query(&rowid, None, Some(-3), 5, quote, columns),
                "SELECT quote(\"rowid\"),quote(\"a\") FROM \"t x\" WHERE \"rowid\"<=-3 ORDER BY \"rowid\" LIMIT 5",
            ),
            (
                page_query(
                    &pk,
                    Some(&["2".to_string(), "'k'".to_string()]),
                    None,
                    5,
                    |_, c| c.to_string(),
                    columns,
                ),
                "SELECT \"a\",\"b\",\"c\" FROM \"t x\" WHERE (\"b\",\"a\")>(2,'k') ORDER BY \"b\",\"a\" LIMIT 5",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn every_error_has_its_kind() {
        use crate::error::{Classify, Kind::*};
        use crate::remote::cloudflare::ApiError;
        let s = String::from;
        let transport = ApiError::Transport {
            what: s("querying"),
            message: s("reset"),
        };
        let cases = [
            (SourceError::Missing(s("db")), BadInput),
            (SourceError::NotADatabase(s("db")), BadInput),
            (SourceError::UnknownTable(s("t")), BadInput),
            (SourceError::BadColumn(s("t.c")), BadInput),
            (SourceError::Api(ApiError::MissingToken("T")), BadInput),
            (SourceError::Api(transport), Failed),
            (SourceError::Catalog(s("x")), Failed),
            (
                SourceError::Sqlite {
                    path: s("db"),
                    message: s("x"),
                },
                Failed,
            ),
            (SourceError::Other(s("x")), Failed),
        ];
        for (err, kind) in cases {
            assert_eq!(err.kind(), kind, "{err}");
        }
    }
}
