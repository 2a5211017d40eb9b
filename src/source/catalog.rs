//! What to back up: the schema objects of a database and how to read each table.
//!
//! Every source answers the same catalog queries (`sqlite_master`, `PRAGMA table_list`, and
//! `table_xinfo` and `index_list` of every table), so the decisions made from them live here, once,
//! as a pure function ([`plan`]): which tables are internal or shadow tables, which columns are
//! generated, whether the rowid must be carried explicitly, what keys pages are read by, and
//! which FTS5 tables are refilled by a `rebuild` rather than by rows.

use std::collections::HashMap;

use super::{Source, SourceError};
use crate::model::value::quote_ident;
use crate::model::{Affinity, Cell, DataMode, Schema, SchemaObject, Table, TableFilter, affinity};

/// The catalog query every source runs first.
pub const MASTER_SQL: &str = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY rowid";
/// Table kinds, including `shadow` for the tables a virtual table owns.
pub const TABLE_LIST_SQL: &str = "PRAGMA table_list";
/// The `WHERE` clause of the joined catalog statements, written once so both describe the same
/// tables: ordinary tables only. SQLite's and D1's internal tables are left out in the query
/// itself, so D1 is never asked to describe a table it guards; so are virtual tables, whose
/// description needs their module loaded: they are described one by one, and only those backed
/// up.
macro_rules! ordinary_tables {
    () => {
        " WHERE m.type = 'table' AND m.sql NOT LIKE 'CREATE VIRTUAL TABLE%' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND m.name NOT LIKE '\\_cf\\_%' ESCAPE '\\'"
    };
}
/// Every ordinary table's `PRAGMA table_xinfo` rows behind its name, in one statement (the pragma
/// as a table-valued function), so the catalog is one request to D1 rather than one more after
/// `sqlite_master`.
const COLUMNS_SQL: &str = concat!(
    "SELECT m.name, x.cid, x.name, x.type, x.\"notnull\", x.dflt_value, x.pk, x.hidden FROM sqlite_master AS m JOIN pragma_table_xinfo(m.name) AS x",
    ordinary_tables!(),
    " ORDER BY m.rowid, x.cid"
);
/// Every ordinary table's index origins (`PRAGMA index_list`) behind its name, as [`COLUMNS_SQL`].
const INDEX_ORIGINS_SQL: &str = concat!(
    "SELECT m.name, l.seq, l.name, l.\"unique\", l.origin, l.partial FROM sqlite_master AS m JOIN pragma_index_list(m.name) AS l",
    ordinary_tables!()
);
/// AUTOINCREMENT counters; asked only when `sqlite_master` shows the table, which SQLite makes
/// with the first AUTOINCREMENT table.
const SEQUENCES_SQL: &str = "SELECT name, CAST(seq AS TEXT) FROM sqlite_sequence";

impl TableFilter {
    /// Parses `table.column` items (split at the first `.`).
    pub fn parse_columns(items: &[String]) -> Result<Vec<(String, String)>, SourceError> {
        items
            .iter()
            .map(|item| match item.split_once('.') {
                Some((t, c)) if !t.is_empty() && !c.is_empty() => {
                    Ok((t.to_string(), c.to_string()))
                }
                _ => Err(SourceError::BadColumn(format!(
                    "{item}: expected TABLE.COLUMN"
                ))),
            })
            .collect()
    }

    fn excluded_columns<'a>(&'a self, table: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.exclude_columns
            .iter()
            .filter(move |(t, _)| t == table)
            .map(|(_, c)| c.as_str())
    }

    fn wants(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|t| t == name))
            && !self.exclude.iter().any(|t| t == name)
    }
}

/// A column as `PRAGMA table_xinfo` describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnInfo {
    pub name: String,
    pub decl_type: String,
    pub pk: i64,
    /// 0 normal, 1 hidden (virtual table), 2 generated virtual, 3 generated stored.
    pub hidden: i64,
    /// NOT NULL without a DEFAULT: a row cannot be inserted without a value for it.
    pub required: bool,
}

/// The per-table catalog answers [`plan`] needs.
#[derive(Debug, Clone, PartialEq)]
pub struct TableInfo {
    pub columns: Vec<ColumnInfo>,
    /// `origin` of each index (`c`, `u`, `pk`): a rowid table whose single INTEGER primary key
    /// has a `pk` index is not a rowid alias (`INTEGER PRIMARY KEY DESC`).
    pub index_origins: Vec<String>,
}

/// Names SQLite accepts for the rowid, tried in order until one is not a column's name.
const ROWID_NAMES: [&str; 3] = ["rowid", "_rowid_", "oid"];

/// Reads the catalog from `source` and plans the dump: one round of statements, and a second
/// only for AUTOINCREMENT counters and the virtual tables backed up.
pub async fn load(source: &dyn Source, filter: &TableFilter) -> Result<Schema, SourceError> {
    let catalog = [MASTER_SQL, TABLE_LIST_SQL, COLUMNS_SQL, INDEX_ORIGINS_SQL];
    let mut first = source.query(&catalog.map(String::from)).await?.into_iter();
    let master = parse_master(first.next().unwrap_or_default())?;
    let kinds = parse_table_list(first.next().unwrap_or_default())?;
    let mut columns = parse_named(first.next().unwrap_or_default(), "table_xinfo")?;
    let mut origins = parse_named(first.next().unwrap_or_default(), "index_list")?;

    let candidates: Vec<&MasterRow> = master
        .iter()
        .filter(|m| m.kind == "table" && skip_reason(&m.name, &kinds).is_none())
        .collect();
    for wanted in &filter.include {
        if !candidates.iter().any(|m| &m.name == wanted) {
            return Err(SourceError::UnknownTable(wanted.clone()));
        }
    }
    let chosen: Vec<&MasterRow> = candidates
        .into_iter()
        .filter(|m| filter.wants(&m.name))
        .collect();
    // The tables the joined statements left out (virtual tables) are described one by one.
    let undescribed: Vec<&MasterRow> = chosen
        .iter()
        .copied()
        .filter(|m| !columns.contains_key(&m.name))
        .collect();
    let mut statements = Vec::new();
    for m in &undescribed {
        let ident = quote_ident(&m.name);
        statements.push(format!("PRAGMA table_xinfo({ident})"));
        statements.push(format!("PRAGMA index_list({ident})"));
    }
    let has_sequence = master.iter().any(|m| m.name == "sqlite_sequence");
    if has_sequence {
        statements.push(SEQUENCES_SQL.to_string());
    }
    let mut answers = if statements.is_empty() {
        Vec::new()
    } else {
        source.query(&statements).await?
    };
    let sequences = if has_sequence {
        parse_pairs(answers.pop().unwrap_or_default())?
    } else {
        Vec::new()
    };
    let mut answers = answers.into_iter();
    for m in undescribed {
        columns.insert(m.name.clone(), answers.next().unwrap_or_default());
        origins.insert(m.name.clone(), answers.next().unwrap_or_default());
    }
    let mut infos = Vec::new();
    for m in chosen {
        let columns = parse_xinfo(columns.remove(&m.name).unwrap_or_default())?;
        let index_origins = parse_index_origins(origins.remove(&m.name).unwrap_or_default())?;
        infos.push((
            m.name.clone(),
            TableInfo {
                columns,
                index_origins,
            },
        ));
    }
    for (table, column) in &filter.exclude_columns {
        let known = infos
            .iter()
            .any(|(t, info)| t == table && info.columns.iter().any(|c| &c.name == column));
        if !known {
            return Err(SourceError::BadColumn(format!(
                "{table}.{column}: no such column among the tables backed up"
            )));
        }
    }
    plan(&master, &kinds, &infos, &sequences, filter)
}

/// One row of `sqlite_master`.
#[derive(Debug, Clone, PartialEq)]
pub struct MasterRow {
    pub kind: String,
    pub name: String,
    pub table: String,
    pub sql: Option<String>,
}

/// Why a table is never backed up, if it is not: SQLite's and D1's internal tables and the shadow
/// tables of virtual tables (the virtual table recreates them).
pub fn skip_reason(name: &str, kinds: &[(String, String)]) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("sqlite_") {
        Some("SQLite internal table")
    } else if lower.starts_with("_cf_") {
        Some("D1 internal table")
    } else if kinds.iter().any(|(n, k)| n == name && k == "shadow") {
        Some("shadow table of a virtual table")
    } else {
        None
    }
}

/// Plans the dump from catalog answers. Pure: every source's answers go through here.
pub fn plan(
    master: &[MasterRow],
    kinds: &[(String, String)],
    infos: &[(String, TableInfo)],
    sequences: &[(String, String)],
    filter: &TableFilter,
) -> Result<Schema, SourceError> {
    let mut tables = Vec::new();
    let mut skipped = Vec::new();
    for m in master.iter().filter(|m| m.kind == "table") {
        if let Some(reason) = skip_reason(&m.name, kinds) {
            if m.name != "sqlite_sequence" {
                skipped.push((m.name.clone(), reason.to_string()));
            }
            continue;
        }
        if !filter.wants(&m.name) {
            skipped.push((m.name.clone(), "not selected".to_string()));
            continue;
        }
        let Some((_, info)) = infos.iter().find(|(n, _)| n == &m.name) else {
            return Err(SourceError::Catalog(format!(
                "no column information for table {}",
                m.name
            )));
        };
        let sql = m.sql.clone().unwrap_or_default();
        let kind = kinds
            .iter()
            .find(|(n, _)| n == &m.name)
            .map(|(_, k)| k.as_str())
            .unwrap_or("table");
        let excluded: Vec<&str> = filter.excluded_columns(&m.name).collect();
        let mut table = plan_table(&m.name, &sql, kind, info, &excluded)?;
        table.sequence = sequences
            .iter()
            .find(|(n, _)| n == &m.name)
            .map(|(_, s)| s.clone());
        tables.push(table);
    }
    let kept = |name: &str| tables.iter().any(|t: &Table| t.name == name);
    let mut post: Vec<SchemaObject> = Vec::new();
    for wanted in ["index", "view", "trigger"] {
        for m in master.iter().filter(|m| m.kind == wanted) {
            let Some(sql) = &m.sql else { continue };
            let is_view = master.iter().any(|v| v.kind == "view" && v.name == m.table);
            if m.kind == "view" || kept(&m.table) || is_view {
                post.push(SchemaObject {
                    kind: m.kind.clone(),
                    name: m.name.clone(),
                    table: m.table.clone(),
                    sql: sql.clone(),
                });
            }
        }
    }
    Ok(Schema {
        tables,
        post,
        skipped,
    })
}

fn plan_table(
    name: &str,
    sql: &str,
    kind: &str,
    info: &TableInfo,
    excluded: &[&str],
) -> Result<Table, SourceError> {
    let module = (kind == "virtual").then(|| virtual_module(sql));
    let without_rowid = kind == "table" && is_without_rowid(sql);
    for column in info
        .columns
        .iter()
        .filter(|c| excluded.contains(&c.name.as_str()))
    {
        let why = if column.pk > 0 {
            Some("it is part of the primary key")
        } else if column.required {
            Some(
                "it is NOT NULL without a DEFAULT, so rows restored without it would be rejected; exclude the table, or give the column a DEFAULT",
            )
        } else {
            None
        };
        if let Some(why) = why {
            return Err(SourceError::BadColumn(format!(
                "cannot exclude {name}.{}: {why}",
                column.name
            )));
        }
    }
    let insertable: Vec<&ColumnInfo> = info
        .columns
        .iter()
        .filter(|c| c.hidden == 0 && !excluded.contains(&c.name.as_str()))
        .collect();
    let mut columns = Vec::new();
    let mut affinities = Vec::new();
    let mut key = Vec::new();
    if without_rowid {
        let mut pk: Vec<(i64, usize)> = Vec::new();
        for (i, c) in insertable.iter().enumerate() {
            columns.push(c.name.clone());
            affinities.push(affinity(&c.decl_type));
            if c.pk > 0 {
                pk.push((c.pk, i));
            }
        }
        pk.sort();
        key = pk.into_iter().map(|(_, i)| i).collect();
    } else {
        let alias = rowid_alias(info);
        if alias.is_none() {
            let free = ROWID_NAMES
                .iter()
                .find(|r| !info.columns.iter().any(|c| c.name.eq_ignore_ascii_case(r)));
            match free {
                Some(r) => {
                    columns.push(r.to_string());
                    affinities.push(Affinity::Integer);
                    key.push(0);
                }
                None => {
                    return Err(SourceError::Catalog(format!(
                        "table {name} has columns named rowid, _rowid_ and oid and no INTEGER PRIMARY KEY, so its rows cannot be paged; rename one of those columns, or leave the table out with --exclude-tables"
                    )));
                }
            }
        }
        for c in &insertable {
            if Some(c.name.as_str()) == alias {
                key.push(columns.len());
            }
            columns.push(c.name.clone());
            affinities.push(affinity(&c.decl_type));
        }
    }
    if key.is_empty() {
        return Err(SourceError::Catalog(format!(
            "table {name} has no key to page it by"
        )));
    }
    let data = match module.as_deref() {
        Some("fts5") | Some("fts4") | Some("fts3") => match fts_content(sql) {
            FtsContent::Own => DataMode::Rows,
            FtsContent::External => DataMode::Rebuild,
            FtsContent::Contentless => DataMode::Skip(
                "contentless full-text index: its text cannot be read back; rebuild it from its source after restoring".to_string(),
            ),
        },
        _ => DataMode::Rows,
    };
    Ok(Table {
        name: name.to_string(),
        create_sql: sql.to_string(),
        module,
        without_rowid,
        columns,
        affinities,
        key,
        data,
        sequence: None,
    })
}

/// The column that aliases the rowid: the only primary key column, declared exactly `INTEGER`,
/// with no separate primary-key index (which `INTEGER PRIMARY KEY DESC` would have).
fn rowid_alias(info: &TableInfo) -> Option<&str> {
    let pk: Vec<&ColumnInfo> = info.columns.iter().filter(|c| c.pk > 0).collect();
    match pk.as_slice() {
        [only]
            if only.decl_type.eq_ignore_ascii_case("integer")
                && !info.index_origins.iter().any(|o| o == "pk") =>
        {
            Some(only.name.as_str())
        }
        _ => None,
    }
}

/// Whether a CREATE TABLE statement ends with the `WITHOUT ROWID` table option. Options follow
/// the closing parenthesis of the column list, so only the text after it is looked at.
pub fn is_without_rowid(sql: &str) -> bool {
    let Some(close) = sql.rfind(')') else {
        return false;
    };
    let options = sql[close + 1..].to_ascii_lowercase();
    let words: Vec<&str> = options
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    words.windows(2).any(|w| w == ["without", "rowid"])
}

/// The module of a `CREATE VIRTUAL TABLE ... USING module(...)` statement, lowercased.
pub fn virtual_module(sql: &str) -> String {
    let lower = sql.to_ascii_lowercase();
    lower
        .find(" using ")
        .map(|at| {
            lower[at + 7..]
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Debug, PartialEq)]
pub enum FtsContent {
    Own,
    External,
    Contentless,
}

/// Where an FTS table keeps its text, from its `content=` option.
pub fn fts_content(sql: &str) -> FtsContent {
    let Some(open) = sql.find('(') else {
        return FtsContent::Own;
    };
    let args = &sql[open + 1..sql.rfind(')').unwrap_or(sql.len())];
    for arg in split_args(args) {
        let Some((key, value)) = arg.split_once('=') else {
            continue;
        };
        if key.trim().eq_ignore_ascii_case("content") {
            let value = value.trim();
            let unquoted = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .or_else(|| value.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
                .unwrap_or(value);
            return if unquoted.is_empty() {
                FtsContent::Contentless
            } else {
                FtsContent::External
            };
        }
    }
    FtsContent::Own
}

/// Splits module arguments at commas outside quotes and parentheses.
fn split_args(args: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quote, mut start) = (0i32, None::<char>, 0);
    for (i, c) in args.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"' | '`') => quote = Some(c),
            (None, '[') => quote = Some(']'),
            (None, '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, ',') if depth == 0 => {
                parts.push(&args[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&args[start..]);
    parts
}

fn text(cell: &Cell) -> Option<String> {
    match cell {
        Cell::Text(s) => Some(s.clone()),
        Cell::Integer(i) => Some(i.to_string()),
        _ => None,
    }
}

fn int(cell: &Cell) -> i64 {
    match cell {
        Cell::Integer(i) => *i,
        Cell::Text(s) => s.parse().unwrap_or(0),
        Cell::Real(f) => *f as i64,
        _ => 0,
    }
}

fn column<'a>(row: &'a [Cell], i: usize, what: &str) -> Result<&'a Cell, SourceError> {
    row.get(i)
        .ok_or_else(|| SourceError::Catalog(format!("{what}: expected at least {} columns", i + 1)))
}

fn parse_master(rows: Vec<Vec<Cell>>) -> Result<Vec<MasterRow>, SourceError> {
    rows.iter()
        .map(|r| {
            Ok(MasterRow {
                kind: text(column(r, 0, "sqlite_master")?).unwrap_or_default(),
                name: text(column(r, 1, "sqlite_master")?).unwrap_or_default(),
                table: text(column(r, 2, "sqlite_master")?).unwrap_or_default(),
                sql: text(column(r, 3, "sqlite_master")?),
            })
        })
        .collect()
}

/// `PRAGMA table_list` rows as (name, type) for the main schema.
fn parse_table_list(rows: Vec<Vec<Cell>>) -> Result<Vec<(String, String)>, SourceError> {
    let mut out = Vec::new();
    for r in &rows {
        let schema = text(column(r, 0, "table_list")?).unwrap_or_default();
        if schema == "main" {
            out.push((
                text(column(r, 1, "table_list")?).unwrap_or_default(),
                text(column(r, 2, "table_list")?).unwrap_or_default(),
            ));
        }
    }
    Ok(out)
}

/// Rows of a per-table pragma read for every table at once, grouped by the table name in their
/// first cell, the rest of each row as the pragma itself gives it.
fn parse_named(
    rows: Vec<Vec<Cell>>,
    what: &str,
) -> Result<HashMap<String, Vec<Vec<Cell>>>, SourceError> {
    let mut by_table: HashMap<String, Vec<Vec<Cell>>> = HashMap::new();
    for mut row in rows {
        let name = text(column(&row, 0, what)?).unwrap_or_default();
        row.remove(0);
        by_table.entry(name).or_default().push(row);
    }
    Ok(by_table)
}

fn parse_xinfo(rows: Vec<Vec<Cell>>) -> Result<Vec<ColumnInfo>, SourceError> {
    rows.iter()
        .map(|r| {
            Ok(ColumnInfo {
                name: text(column(r, 1, "table_xinfo")?).unwrap_or_default(),
                decl_type: text(column(r, 2, "table_xinfo")?).unwrap_or_default(),
                pk: int(column(r, 5, "table_xinfo")?),
                hidden: int(column(r, 6, "table_xinfo")?),
                required: int(column(r, 3, "table_xinfo")?) != 0
                    && matches!(column(r, 4, "table_xinfo")?, Cell::Null),
            })
        })
        .collect()
}

fn parse_index_origins(rows: Vec<Vec<Cell>>) -> Result<Vec<String>, SourceError> {
    rows.iter()
        .map(|r| Ok(text(column(r, 3, "index_list")?).unwrap_or_default()))
        .collect()
}

fn parse_pairs(rows: Vec<Vec<Cell>>) -> Result<Vec<(String, String)>, SourceError> {
    rows.iter()
        .map(|r| {
            Ok((
                text(column(r, 0, "sqlite_sequence")?).unwrap_or_default(),
                text(column(r, 1, "sqlite_sequence")?).unwrap_or_default(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: &str, pk: i64, hidden: i64) -> ColumnInfo {
        ColumnInfo {
            name: name.into(),
            decl_type: ty.into(),
            pk,
            hidden,
            required: false,
        }
    }

    #[test]
    fn excluded_columns_table() {
        let mut secret = col("secret", "TEXT", 0, 0);
        let info = |c: ColumnInfo| info(vec![col("id", "INTEGER", 1, 0), c], &[]);
        let sql = "CREATE TABLE t(id INTEGER PRIMARY KEY, secret TEXT)";
        let t = plan_table("t", sql, "table", &info(secret.clone()), &["secret"]).unwrap();
        assert_eq!(t.columns, vec!["id"]);
        secret.required = true;
        let err = plan_table("t", sql, "table", &info(secret), &["secret"]).unwrap_err();
        assert!(
            err.to_string().contains("NOT NULL without a DEFAULT"),
            "{err}"
        );
        let err = plan_table("t", sql, "table", &info(col("x", "", 0, 0)), &["id"]).unwrap_err();
        assert!(err.to_string().contains("primary key"), "{err}");
        assert!(TableFilter::parse_columns(&["users.password".into()]).is_ok());
        for bad in ["users", ".x", "users."] {
            assert!(TableFilter::parse_columns(&[bad.into()]).is_err(), "{bad}");
        }
    }

    fn info(columns: Vec<ColumnInfo>, origins: &[&str]) -> TableInfo {
        TableInfo {
            columns,
            index_origins: origins.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn rowid_handling_table() {
        // (create sql, kind, info, expected columns, expected key)
        let cases = vec![
            (
                "CREATE TABLE t(id INTEGER PRIMARY KEY, a)",
                info(vec![col("id", "INTEGER", 1, 0), col("a", "", 0, 0)], &[]),
                vec!["id", "a"],
                vec![0],
            ),
            (
                "CREATE TABLE t(id INTEGER PRIMARY KEY DESC, a)",
                info(
                    vec![col("id", "INTEGER", 1, 0), col("a", "", 0, 0)],
                    &["pk"],
                ),
                vec!["rowid", "id", "a"],
                vec![0],
            ),
            (
                "CREATE TABLE t(id INT PRIMARY KEY, a)",
                info(vec![col("id", "INT", 1, 0), col("a", "", 0, 0)], &["pk"]),
                vec!["rowid", "id", "a"],
                vec![0],
            ),
            (
                "CREATE TABLE t(rowid, a)",
                info(vec![col("rowid", "", 0, 0), col("a", "", 0, 0)], &[]),
                vec!["_rowid_", "rowid", "a"],
                vec![0],
            ),
            (
                "CREATE TABLE t(a, b, g AS (a+b))",
                info(
                    vec![col("a", "", 0, 0), col("b", "", 0, 0), col("g", "", 0, 2)],
                    &[],
                ),
                vec!["rowid", "a", "b"],
                vec![0],
            ),
            (
                "CREATE TABLE t(a TEXT, b INT, c, PRIMARY KEY(b, a)) WITHOUT ROWID",
                info(
                    vec![
                        col("a", "TEXT", 2, 0),
                        col("b", "INT", 1, 0),
                        col("c", "", 0, 0),
                    ],
                    &["pk"],
                ),
                vec!["a", "b", "c"],
                vec![1, 0],
            ),
        ];
        for (sql, info, columns, key) in cases {
            let t = plan_table("t", sql, "table", &info, &[]).unwrap();
            assert_eq!(t.columns, columns, "{sql}");
            assert_eq!(t.key, key, "{sql}");
        }
    }

    #[test]
    fn fts_content_table() {
        for (sql, want) in [
            ("CREATE VIRTUAL TABLE f USING fts5(a, b)", FtsContent::Own),
            (
                "CREATE VIRTUAL TABLE f USING fts5(a, content='docs', content_rowid='id')",
                FtsContent::External,
            ),
            (
                "CREATE VIRTUAL TABLE f USING fts5(a, content=docs)",
                FtsContent::External,
            ),
            (
                "CREATE VIRTUAL TABLE f USING fts5(a, content='')",
                FtsContent::Contentless,
            ),
            (
                "CREATE VIRTUAL TABLE f USING fts5(a, content=\"\")",
                FtsContent::Contentless,
            ),
            (
                "CREATE VIRTUAL TABLE f USING fts5(a, tokenize='unicode61 remove_diacritics 2')",
                FtsContent::Own,
            ),
        ] {
            assert_eq!(fts_content(sql), want, "{sql}");
        }
    }

    #[test]
    fn affinities_table() {
        use Affinity::*;
        for (decl, want) in [
            ("INTEGER", Integer),
            ("int", Integer),
            ("BIGINT UNSIGNED", Integer),
            ("POINT", Integer),
            ("TEXT", Text),
            ("varchar(255)", Text),
            ("CLOB", Text),
            ("CHARINT", Integer),
            ("BLOB", Blob),
            ("", Blob),
            ("REAL", Real),
            ("double precision", Real),
            ("FLOATING POINT", Integer),
            ("NUMERIC", Numeric),
            ("DECIMAL(10,5)", Numeric),
            ("BOOLEAN", Numeric),
            ("DATETIME", Numeric),
            ("ANY", Numeric),
        ] {
            assert_eq!(affinity(decl), want, "{decl}");
        }
    }

    #[test]
    fn without_rowid_table() {
        for (sql, want) in [
            ("CREATE TABLE t(a PRIMARY KEY) WITHOUT ROWID", true),
            (
                "CREATE TABLE t(a PRIMARY KEY) without   rowid, strict",
                true,
            ),
            ("CREATE TABLE t(a PRIMARY KEY) STRICT, WITHOUT ROWID", true),
            ("CREATE TABLE \"without rowid\"(a)", false),
            ("CREATE TABLE t(a DEFAULT 'without rowid')", false),
        ] {
            assert_eq!(is_without_rowid(sql), want, "{sql}");
        }
    }

    #[test]
    fn internal_and_shadow_tables_are_skipped() {
        let kinds = vec![("f_data".to_string(), "shadow".to_string())];
        assert!(skip_reason("_cf_KV", &kinds).is_some());
        assert!(skip_reason("sqlite_stat1", &kinds).is_some());
        assert!(skip_reason("f_data", &kinds).is_some());
        assert!(skip_reason("d1_migrations", &kinds).is_none());
        assert!(skip_reason("users", &kinds).is_none());
    }

    #[test]
    fn virtual_module_table() {
        assert_eq!(
            virtual_module("CREATE VIRTUAL TABLE x USING fts5(a)"),
            "fts5"
        );
        assert_eq!(
            virtual_module("create virtual table x using  FTS5 (a)"),
            "fts5"
        );
        assert_eq!(
            virtual_module("CREATE VIRTUAL TABLE x USING rtree(id, a, b)"),
            "rtree"
        );
    }
}
