//! The D1 wire contract: the SQL d1r2 sends D1's `/raw` endpoint and how it reads the answers
//! back as literals SQLite reads back exactly. Pure, and apart from the REST calls, so each rule
//! is tested against SQLite itself and a change to what D1 is asked is a change to this file.
//!
//! D1 answers with JSON, whose numbers round integers beyond 2^53 and whose BLOBs are arrays of
//! bytes, so no table value travels as a JSON value. A row comes as one string, its cells joined
//! by commas ([`quoted_cell`]): a text as itself behind its byte count, `T<bytes>:<text>` (D1
//! neither escapes it nor scans it for NUL; d1r2 writes its literal), an integer as
//! `CAST(.. AS TEXT)`, a BLOB or NULL as `quote()` writes it, a real too but for the sign of a
//! zero, which `quote()` drops ([`real_cell`]). [`split_row`] splits the string back as the JSON
//! is parsed. D1's JSON carries bytes that are not UTF-8 as U+FFFD, so a page in which a text did
//! not arrive as counted, or holds U+FFFD, is read again with every text as its bytes in hex
//! ([`hex_text_cell`]). Catalog answers (names, small integers) are the only
//! JSON values read ([`cell`]).
//!
//! D1's limits decide the rest:
//! - a statement is at most 100,000 bytes: the SQL of one request stays under
//!   [`MAX_REQUEST_SQL`] ([`first_page_requests`], [`chunk_requests`]);
//! - a string or BLOB is at most 2,000,000 bytes ([`MAX_LENGTH`]), the row sent as one string
//!   included: a value over [`inline_bytes`] comes as a placeholder, `?t<bytes>` or `?b<bytes>`
//!   ([`large_cell`]), and is read apart in hex chunks of [`CHUNK_BYTES`], all chunks of a value
//!   in one request, so in one state of its row ([`chunk_requests`], [`with_large`]);
//! - an expression nests at most 100 deep: a row's concatenation is a balanced tree
//!   ([`one_string`]), 22 deep at SQLite's most columns;
//! - a query binds at most 100 parameters: d1r2 binds none, every key and bound is a literal in
//!   the SQL, so a wide key never meets that limit;
//! - every request is one of the 1,200 Cloudflare allows in five minutes: statements go up to
//!   [`STATEMENTS_PER_REQUEST`] a request.

use std::ops::Range;

use serde::Deserialize;
use serde_json::Value;

use crate::model::value::{ValueRef, quote_ident, render, render_str};
use crate::model::{Affinity, Cell, Page, Row, Table};
use crate::source::{SourceError, key_columns, page_query, row_key};
/// Statements sent in one request (catalog queries, tables' first pages): one request is one
/// rate-limit token.
pub(super) const STATEMENTS_PER_REQUEST: usize = 50;
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

/// The page query's cell. D1 answers one query at a time, so the less it does a cell the sooner
/// a page comes: text travels as itself behind its byte count, `T<bytes>:<text>` (no escaping,
/// no scan for NUL: [`split_row`] finds its end and the literal is written here), integers as
/// `CAST(.. AS TEXT)` (the same digits without `quote()`'s printf), reals as [`real_cell`] writes
/// them, BLOBs and NULL as `quote()` does. Text or a BLOB over `inline` bytes comes as a placeholder (see
/// [`large_cell`]).
pub(super) fn quoted_cell(column: &str, affinity: Affinity, inline: usize) -> String {
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
pub(super) fn hex_text_cell(column: &str, affinity: Affinity, inline: usize) -> String {
    by_type(
        column,
        affinity,
        inline,
        format!("'CAST(X'''||hex({column})||''' AS TEXT)'"),
        format!("quote({column})"),
    )
}

/// `CASE typeof(column) WHEN ..`: `text` for a text and `integer` for an integer, a text or BLOB
/// over `inline` bytes as its placeholder, a BLOB as `quote()` writes it, a real as [`real_cell`]
/// does, NULL as `NULL`; the storage classes tried in the order the column's affinity makes likely,
/// since D1 compares type names for every cell until one matches.
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
    let real = real_cell(column);
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

/// A real, exactly. D1's SQLite (3.47 in workerd) turns reals into text and back inexactly: about
/// one random double in five comes out of `quote()` as text that reads back one unit in the last
/// place off, and `quote(-0.0)` is `0.0`. Multiplying by a power of two is exact, so a finite
/// nonzero real comes as `quote()`'s text, `~`, and its bits as an integer: the real times
/// `2^(54-2t)`, `t = floor(log2(abs(x))/2)`, at most 2^56 and whole whatever the rounding of
/// `log2` ([`exact_real`] finds the power from the text and rebuilds the real). A zero's sign
/// is read with `atan2` (`-π` for `-0.0`); infinities come from `quote()` alone (their integer
/// is NULL). `atan2`, `log2`, `pow` and `floor` are math functions D1's SQLite has. Only a column
/// without affinity (or STRICT `ANY`) keeps `-0.0`, but a STRICT `ANY` column's declared type
/// reads as NUMERIC, so every real is asked this way.
fn real_cell(column: &str) -> String {
    let half = format!("pow(2,27-floor(log2(abs({column}))/2))");
    format!(
        "iif({column}=0 AND atan2({column},-1)<0,'-0.0',ifnull(quote({column})||'~'||CAST({column}*{half}*{half} AS INTEGER),quote({column})))"
    )
}

/// The real a cell of [`real_cell`] stands for, as a literal: `text~bits` becomes `bits × 2^-k`,
/// the power `k` the one that brings `bits` to `text`'s value (which is within a few units in the
/// last place of it); any other literal is kept (infinity made one SQLite reads). False when the
/// two do not agree.
fn exact_real(literal: &str, out: &mut String) -> bool {
    let Some((text, bits)) = split_at_byte(literal, b'~') else {
        out.push_str(normalize_literal(literal));
        return true;
    };
    let (Ok(approx), Ok(bits)) = (text.parse::<f64>(), bits.parse::<i64>()) else {
        return false;
    };
    // The largest doubles' 15 digits round up past them.
    let approx = approx.clamp(f64::MIN, f64::MAX);
    let scale = (bits.unsigned_abs() as f64).log2() - approx.abs().log2();
    let k = scale.round();
    if bits as f64 as i64 != bits
        || !approx.is_finite()
        || bits == 0
        || (scale - k).abs() > 0.01
        || k.abs() > 1200.0
    {
        return false;
    }
    // `bits` has at most 53 significant bits, so it is a double exactly; two halvings of the
    // power keep each product exact on the way to a subnormal.
    let k = k as i32;
    let real = bits as f64 * 2f64.powi(-(k / 2)) * 2f64.powi(-(k - k / 2));
    let unit = approx.abs() * 1e-14;
    if (real - approx).abs() > unit {
        return false;
    }
    crate::model::value::render(ValueRef::Real(real), out);
    true
}

/// The largest text or BLOB, in bytes, a page of a table `width` columns wide reads inline. D1
/// caps every string at [`MAX_LENGTH`], the row D1 sends as one string included; a literal is at
/// most twice its value's bytes plus 17 (`CAST(X'..' AS TEXT)`), so a row of values this size,
/// commas included, stays under the cap. Larger values are read apart, in chunks.
fn inline_bytes(width: usize) -> usize {
    (ROW_BUDGET / width.max(1)).saturating_sub(24) / 2
}

/// A value a page holds as a placeholder, `?t<bytes>` (text) or `?b<bytes>` (BLOB): `quote()`
/// writes nothing that starts with `?`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct LargeCell {
    pub(super) text: bool,
    pub(super) bytes: usize,
}

/// The placeholder `literal` stands for, if it is one.
fn large_cell(literal: &str) -> Option<LargeCell> {
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
pub(super) struct LargeAt {
    pub(super) row: usize,
    pub(super) column: usize,
    pub(super) cell: LargeCell,
}

/// How many leading rows of `page` to keep so that, its large values read, it holds about
/// `budget` bytes of literals (at least one row), and the large values among them.
pub(super) fn plan_large(page: &Page, budget: usize) -> (usize, Vec<LargeAt>) {
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
pub(super) type Chunk = (usize, usize, String);

/// The statements that read `value` (the `index`th large value) of `table` in chunks of
/// [`CHUNK_BYTES`], each answering one row of one hex string; the row is found by its key
/// literals in `row`.
pub(super) fn chunk_statements(
    table: &Table,
    row: Row<'_>,
    index: usize,
    value: &LargeAt,
) -> Vec<Chunk> {
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
pub(super) fn chunk_requests(chunks: &[Chunk]) -> Vec<Range<usize>> {
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
fn normalize_literal(literal: &str) -> &str {
    match literal {
        "Inf" | "+Inf" => "9.0e999",
        "-Inf" => "-9.0e999",
        _ => literal,
    }
}

/// A cell of a row D1 sent as one string.
#[derive(Debug, Clone, Copy, PartialEq)]
enum RowCell<'a> {
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
fn split_row(row: &str) -> impl Iterator<Item = RowCell<'_>> {
    let mut rest = Some(row);
    std::iter::from_fn(move || {
        let text = rest.take()?;
        if let Some(sent) = text.strip_prefix('T') {
            let cell = split_at_byte(sent, b':')
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
        Some(match split_at_byte(text, b',') {
            Some((literal, after)) => {
                rest = Some(after);
                RowCell::Literal(literal)
            }
            None => RowCell::Literal(text),
        })
    })
}

/// `s` split around the first `byte`, an ASCII one, found by a vectorized search: a page has a
/// few of these searches a cell, and `str::split_once` spent more on each than the parser did.
fn split_at_byte(s: &str, byte: u8) -> Option<(&str, &str)> {
    debug_assert!(byte.is_ascii());
    let at = memchr::memchr(byte, s.as_bytes())?;
    Some((&s[..at], &s[at + 1..]))
}

/// Pushes the cells of a row D1 sent as one string into `page`, each as a literal SQLite reads
/// back exactly; false when a text did not arrive as D1 holds it (garbled, or holding U+FFFD,
/// which D1 writes for bytes that are not UTF-8): the page must be read again as hex.
fn push_row(page: &mut Page, row: &str) -> bool {
    for cell in split_row(row) {
        match cell {
            RowCell::Literal(literal) => {
                let mut exact = true;
                page.push_with(|out| exact = exact_real(literal, out));
                if !exact {
                    return false;
                }
            }
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

/// A catalog value from D1's JSON.
pub(super) fn cell(value: Value) -> Result<Cell, SourceError> {
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

/// The page query as D1 is asked it: a row travels as one string, one JSON value a row instead of
/// one a column, less work for D1 (which serves one query at a time) and for the parser. A rowid
/// table's key is its rowid, always an integer, so its cell skips the type dispatch.
pub(super) fn row_query(
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
pub(super) type Wrap = fn(&str, Affinity, usize) -> String;

/// A page whose rows arrive as one string each, split into literals as the parser hands each
/// string over ([`push_row`]): the page is held once, never as strings and again as literals.
/// Every row must split into as many literals as the first.
#[derive(Debug, Default)]
pub(super) struct Tuples(pub(super) Page);

impl<'de> Deserialize<'de> for Tuples {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Tuples, D::Error> {
        Page::deserialize_with(deserializer, push_row).map(Tuples)
    }
}

/// The page of `table` in `rows`, once its width is checked (a garbled page is read again whole,
/// so it is kept as it is).
pub(super) fn checked(rows: Tuples, table: &Table) -> Result<Page, SourceError> {
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

/// One request of tables' first pages: the tables whose page queries it sends, and whether their
/// largest-rowid queries go in it too.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PageRequest {
    pub(super) tables: Range<usize>,
    pub(super) with_largest: bool,
}

/// The first page queries of tables (`pages`) packed into requests in order: up to
/// [`STATEMENTS_PER_REQUEST`] a request and within [`MAX_REQUEST_SQL`] (a query longer than that
/// goes alone). The largest-rowid queries of a request's tables (`largest`, one for each table
/// keyed by its rowid) go in the same request when it has room for them too, a round trip less
/// before a large table's rows; otherwise they are asked after, of the tables whose page goes on.
pub(super) fn first_page_requests(
    pages: &[String],
    largest: &[Option<String>],
) -> Vec<PageRequest> {
    let mut requests = Vec::new();
    let mut start = 0;
    while start < pages.len() {
        let (mut end, mut length) = (start, 0);
        while end < pages.len()
            && end - start < STATEMENTS_PER_REQUEST
            && (end == start || length + pages[end].len() + 2 <= MAX_REQUEST_SQL)
        {
            length += pages[end].len() + 2;
            end += 1;
        }
        let extra = largest[start..end].iter().flatten();
        let with_largest = end - start + extra.clone().count() <= STATEMENTS_PER_REQUEST
            && length + extra.map(|q| q.len() + 2).sum::<usize>() <= MAX_REQUEST_SQL;
        requests.push(PageRequest {
            tables: start..end,
            with_largest,
        });
        start = end;
    }
    requests
}

impl PageRequest {
    /// The request's statements: each table's page query, followed by its largest-rowid query
    /// when the request has room for them.
    pub(super) fn statements(&self, pages: &[String], largest: &[Option<String>]) -> Vec<String> {
        let mut sql = Vec::new();
        for i in self.tables.clone() {
            sql.push(pages[i].clone());
            sql.extend(largest[i].iter().filter(|_| self.with_largest).cloned());
        }
        sql
    }
}

/// The first `kept` rows of `page` with its `large` values (placeholders, see [`plan_large`])
/// replaced by literals of their bytes, `hex` holding each value's bytes in hex as its chunks
/// answered (D1's `hex()` of a BLOB is already its literal); cut short when rows were left out.
/// `None` when a value's hex is not what its placeholder said: the row changed or went away
/// between the two reads.
pub(super) fn with_large(
    page: &Page,
    kept: usize,
    large: &[LargeAt],
    hex: Vec<String>,
) -> Option<Page> {
    let mut out = Page::new(page.width());
    let mut values = large.iter().zip(hex).peekable();
    for (r, row) in page.rows().take(kept).enumerate() {
        for (c, literal) in row.iter().enumerate() {
            match values.next_if(|(at, _)| at.row == r && at.column == c) {
                Some((at, hex)) if hex.len() == 2 * at.cell.bytes => {
                    if at.cell.text {
                        let bytes = hex::decode(&hex).ok()?;
                        out.push_with(|text| render(ValueRef::Text(&bytes), text));
                    } else {
                        out.push_with(|text| {
                            text.push_str("X'");
                            text.push_str(&hex);
                            text.push('\'');
                        });
                    }
                }
                Some(_) => return None,
                None => out.push(literal),
            }
        }
    }
    if kept < page.len() {
        out.mark_cut();
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn exact_reals_table() {
        let third = 1.0f64 / 3.0;
        // A third's bits times 2^55 (t = -1: 54 - 2t = 56, the mantissa times 4).
        let bits = (third * 2f64.powi(56)) as i64;
        for (literal, want) in [
            ("1.5", Some("1.5")),
            ("-0.0", Some("-0.0")),
            ("Inf", Some("9.0e999")),
            ("NULL", Some("NULL")),
            ("1.5~216172782113783808", Some("1.5")),
            ("-1.5~-216172782113783808", Some("-1.5")),
            // The text one unit off, the bits exact: the bits win.
            (
                &format!("0.33333333333333331~{bits}"),
                Some("0.3333333333333333"),
            ),
            (
                &format!("0.3333333333333334~{bits}"),
                Some("0.3333333333333333"),
            ),
            // The smallest subnormal and the largest double.
            ("4.94065645841247e-324~9007199254740992", Some("5e-324")),
            (
                "1.79769313486232e+308~72057594037927928",
                Some("1.7976931348623157e308"),
            ),
            // Text and bits that disagree, or are not numbers.
            ("1.5~216172782113783809", None),
            ("2.0~216172782113783808", None),
            ("1.5~x", None),
            ("x~1", None),
            ("1.5~0", None),
        ] {
            let mut out = String::new();
            let got = exact_real(literal, &mut out).then_some(out);
            assert_eq!(got.as_deref(), want, "{literal}");
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
            data: crate::model::DataMode::Rows,
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

    /// A math function over its arguments.
    type Math = fn(&[f64]) -> f64;

    /// An in-memory SQLite as D1's: with the math functions d1r2 asks D1 for, which the bundled
    /// SQLite leaves out.
    fn d1_like() -> rusqlite::Connection {
        use rusqlite::functions::FunctionFlags;
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
        let functions: [(&str, i32, Math); 4] = [
            ("atan2", 2, |a| a[0].atan2(a[1])),
            ("pow", 2, |a| a[0].powf(a[1])),
            ("log2", 1, |a| a[0].log2()),
            ("floor", 1, |a| a[0].floor()),
        ];
        for (name, arity, f) in functions {
            conn.create_scalar_function(name, arity, flags, move |ctx| {
                let args = (0..ctx.len())
                    .map(|i| ctx.get::<Option<f64>>(i))
                    .collect::<rusqlite::Result<Option<Vec<f64>>>>()?;
                // SQLite's math functions answer NULL for NULL arguments and for NaN.
                Ok(args.map(|a| f(&a)).filter(|r| !r.is_nan()))
            })
            .unwrap();
        }
        conn
    }

    /// A value exactly: its storage class and its bytes, a real's by its bits (`IS` and `=` take
    /// `-0.0` for `0.0`).
    fn exact(value: rusqlite::types::ValueRef<'_>) -> (u8, Vec<u8>) {
        use rusqlite::types::ValueRef as V;
        match value {
            V::Null => (0, vec![]),
            V::Integer(i) => (1, i.to_be_bytes().to_vec()),
            V::Real(f) => (2, f.to_bits().to_be_bytes().to_vec()),
            V::Text(t) => (3, t.to_vec()),
            V::Blob(b) => (4, b.to_vec()),
        }
    }

    /// Every value of column `v` of table `t`, exactly, in rowid order.
    fn values_of_t(conn: &rusqlite::Connection) -> Vec<(u8, Vec<u8>)> {
        let mut statement = conn.prepare("SELECT v FROM t ORDER BY rowid").unwrap();
        statement
            .query_map([], |r| Ok(exact(r.get_ref(0)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// What `literal` reads back as, exactly.
    fn read_back(conn: &rusqlite::Connection, literal: &str) -> (u8, Vec<u8>) {
        conn.query_row(&format!("SELECT {literal}"), [], |r| {
            Ok(exact(r.get_ref(0)?))
        })
        .unwrap_or_else(|e| panic!("{literal}: {e}"))
    }

    /// Every cell expression, for every affinity's order of storage classes, reads column `v` of
    /// `t` as literals that read back as the same values, bit for bit.
    fn assert_cells_read_back(conn: &rusqlite::Connection) {
        let affinities = [
            Affinity::Integer,
            Affinity::Text,
            Affinity::Blob,
            Affinity::Real,
            Affinity::Numeric,
        ];
        let want = values_of_t(conn);
        let wraps = [quoted_cell as Wrap, hex_text_cell];
        for (wrap, affinity) in wraps.into_iter().flat_map(|w| affinities.map(|a| (w, a))) {
            let literals = cells_of_t(conn, |c, inline| wrap(c, affinity, inline), 1000);
            assert_eq!(literals.len(), want.len());
            for (literal, want) in literals.iter().zip(&want) {
                assert_eq!(&read_back(conn, literal), want, "{literal} ({affinity:?})");
            }
        }
    }

    /// A row of SQLite's most columns, every cell a different kind of value, is read whole
    /// within D1's expression depth, and each literal reads back bit for bit.
    #[test]
    fn a_row_of_the_most_columns_reads_back_within_d1s_depth() {
        let conn = d1_like();
        conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_EXPR_DEPTH, 100)
            .unwrap();
        let values = ["-0.0", "0.0", "NULL", "'x,y'", "X'00'", "-5", "4.9e-324"];
        let columns: Vec<String> = (0..2000).map(|i| format!("c{i}")).collect();
        conn.execute_batch(&format!(
            "CREATE TABLE t({}); INSERT INTO t VALUES ({});",
            columns.join(","),
            (0..2000)
                .map(|i| values[i % values.len()])
                .collect::<Vec<_>>()
                .join(",")
        ))
        .unwrap();
        let table = Table {
            name: "t".into(),
            create_sql: String::new(),
            module: None,
            without_rowid: true,
            columns,
            affinities: vec![Affinity::Blob; 2000],
            key: vec![0],
            data: crate::model::DataMode::Rows,
            sequence: None,
        };
        let sql = row_query(&table, None, None, 10, quoted_cell);
        let sent: String = conn
            .query_row(&sql, [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut page = Page::new(2000);
        assert!(push_row(&mut page, &sent));
        for (i, literal) in page.row(0).iter().enumerate() {
            let stored = conn
                .query_row(&format!("SELECT c{i} FROM t"), [], |r| {
                    Ok(exact(r.get_ref(0)?))
                })
                .unwrap();
            assert_eq!(read_back(&conn, literal), stored, "column {i}: {literal}");
        }
    }

    #[test]
    fn cell_expressions_read_back_in_sqlite() {
        let conn = d1_like();
        conn.execute_batch(
            "CREATE TABLE t(v); INSERT INTO t VALUES (NULL),(1),(1.5),('it''s'),(X'00ff'),(CAST(X'610062' AS TEXT)),(9e999),(-9223372036854775808),(9223372036854775807),(-0.0),(0.0),(''),('a,''b'),('T3:x,'),(CAST(X'00' AS TEXT)),('日本'),(-9e999),(1e-300),(X''),(-4.9e-324),(-1e-320);",
        )
        .unwrap();
        assert_cells_read_back(&conn);
        // D1's `quote()` drops the sign the cell keeps.
        let quoted: String = conn
            .query_row("SELECT quote(v) FROM t WHERE rowid=10", [], |r| r.get(0))
            .unwrap();
        assert_eq!(quoted, "0.0");
    }

    proptest::proptest! {
        /// Any real SQLite can hold (NaN it stores as NULL), zeros of either sign and subnormals
        /// among them, reads back with its bits, in a column without affinity (which keeps
        /// `-0.0`) and in a REAL one (which keeps what SQLite made of it, `0.0`).
        #[test]
        fn reals_read_back_bit_for_bit(
            bits in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::prelude::any::<u64>(),
                    proptest::prelude::Just((-0.0f64).to_bits()),
                    proptest::prelude::Just(0),
                    0u64..(1 << 52),
                    (1u64 << 63)..((1 << 63) + (1 << 52)),
                ],
                1..20,
            ),
            declared in proptest::sample::select(vec!["", "REAL", "ANY", "BLOB"]),
        ) {
            let conn = d1_like();
            conn.execute_batch(&format!("CREATE TABLE t(v {declared})")).unwrap();
            for f in bits.iter().map(|b| f64::from_bits(*b)).filter(|f| !f.is_nan()) {
                conn.execute("INSERT INTO t VALUES (?1)", [f]).unwrap();
            }
            assert_cells_read_back(&conn);
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
        let conn = d1_like();
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

    #[test]
    fn first_page_requests_table() {
        let page = |n: usize| "p".repeat(n);
        let largest = |n: usize| Some("l".repeat(n));
        // (page query lengths, whether each has a largest-rowid query of 60 bytes) → requests
        for (pages, keyed, want) in [
            (vec![], vec![], vec![]),
            (vec![100; 3], vec![false; 3], vec![(0..3, true)]),
            // Up to 50 statements a request.
            (
                vec![100; 120],
                vec![false; 120],
                vec![(0..50, true), (50..100, true), (100..120, true)],
            ),
            // No more SQL than D1 takes in one request; a longer query goes alone.
            (
                vec![40_000; 3],
                vec![false; 3],
                vec![(0..2, true), (2..3, true)],
            ),
            (
                vec![100, 95_000, 100],
                vec![false; 3],
                vec![(0..1, true), (1..2, false), (2..3, true)],
            ),
            // 25 tables keyed by their rowid fill 50 statements with their largest rowids; 26
            // leave them for later.
            (vec![100; 25], vec![true; 25], vec![(0..25, true)]),
            (vec![100; 26], vec![true; 26], vec![(0..26, false)]),
            (
                vec![100; 60],
                vec![true; 60],
                vec![(0..50, false), (50..60, true)],
            ),
            // Only the tables keyed by their rowid count.
            (
                vec![100; 30],
                (0..30).map(|i| i < 20).collect(),
                vec![(0..30, true)],
            ),
            // The largest rowids must fit in the SQL too.
            (vec![44_950, 44_950], vec![true, true], vec![(0..2, false)]),
            (vec![44_900, 44_900], vec![true, true], vec![(0..2, true)]),
        ] {
            let pages: Vec<String> = pages.iter().map(|&n| page(n)).collect();
            let largest: Vec<Option<String>> = keyed
                .iter()
                .map(|&k| if k { largest(60) } else { None })
                .collect();
            let got: Vec<(Range<usize>, bool)> = first_page_requests(&pages, &largest)
                .into_iter()
                .map(|r| (r.tables, r.with_largest))
                .collect();
            let lengths: Vec<usize> = pages.iter().map(String::len).collect();
            assert_eq!(got, want, "{lengths:?} {keyed:?}");
        }
    }

    #[test]
    fn page_request_statements_follow_each_page_with_its_largest_rowid() {
        let pages: Vec<String> = ["p0", "p1", "p2", "p3"].map(String::from).into();
        let largest = vec![Some("l0".to_string()), None, Some("l2".to_string()), None];
        for (tables, with_largest, want) in [
            (0..4, true, vec!["p0", "l0", "p1", "p2", "l2", "p3"]),
            (0..4, false, vec!["p0", "p1", "p2", "p3"]),
            (1..3, true, vec!["p1", "p2", "l2"]),
        ] {
            let request = PageRequest {
                tables,
                with_largest,
            };
            assert_eq!(request.statements(&pages, &largest), want, "{request:?}");
        }
    }

    #[test]
    fn with_large_table() {
        let at = |row, column, text, bytes| LargeAt {
            row,
            column,
            cell: LargeCell { text, bytes },
        };
        let page = page_of(&[&["1", "?b2"], &["2", "?t3"], &["3", "'x'"]]);
        let both = [at(0, 1, false, 2), at(1, 1, true, 3)];
        for (kept, large, hex, want) in [
            // A BLOB's hex is its literal; a text's bytes are rendered as text.
            (
                3,
                &both[..],
                vec!["00FF", "616263"],
                Some((
                    vec![vec!["1", "X'00FF'"], vec!["2", "'abc'"], vec!["3", "'x'"]],
                    false,
                )),
            ),
            // Rows past `kept` are left out, and the page is cut short.
            (
                2,
                &both[..],
                vec!["00FF", "612762"],
                Some((vec![vec!["1", "X'00FF'"], vec!["2", "'a''b'"]], true)),
            ),
            // Text that is not UTF-8 keeps its bytes.
            (
                2,
                &both[..],
                vec!["00FF", "FF0061"],
                Some((
                    vec![vec!["1", "X'00FF'"], vec!["2", "CAST(X'FF0061' AS TEXT)"]],
                    true,
                )),
            ),
            // A value whose hex is not the length its placeholder said changed between reads.
            (3, &both[..], vec!["00", "616263"], None),
            (3, &both[..], vec!["00FF", "61626364"], None),
            // Hex that does not decode is no text.
            (3, &both[..], vec!["00FF", "6162ZZ"], None),
        ] {
            let hex: Vec<String> = hex.iter().map(|h| h.to_string()).collect();
            let got = with_large(&page, kept, large, hex.clone()).map(|p| {
                let rows: Vec<Vec<String>> = p
                    .rows()
                    .map(|r| r.iter().map(String::from).collect())
                    .collect();
                (rows, p.is_cut())
            });
            let want = want.map(|(rows, cut)| {
                let rows: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| r.iter().map(|c| c.to_string()).collect())
                    .collect();
                (rows, cut)
            });
            assert_eq!(got, want, "{kept} {hex:?}");
        }
    }
}
