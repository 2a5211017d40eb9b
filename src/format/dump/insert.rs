//! INSERT statements for a table's rows, packed several rows to a statement and never longer than
//! D1's statement limit.
//!
//! Rows are packed into multi-row `INSERT ... VALUES (..),(..);` statements up to a target size,
//! which loads much faster than one statement a row. A row whose single INSERT would exceed the
//! limit is written with its largest values replaced by empty placeholders of the same type,
//! followed by `UPDATE ... SET c = c || chunk WHERE key` appends, each within the limit.

use crate::model::value::{CR_MARK, CR_TEXT_CLOSE, LiteralKind, literal_kind, quote_ident};

/// D1 rejects statements longer than 100 kB; every statement we write is at most this long.
pub(crate) const MAX_STATEMENT_BYTES: usize = 100_000;

/// Rows are packed into one statement until it reaches about this size.
pub(crate) const TARGET_STATEMENT_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum InsertError {
    #[error(
        "a row of table {table} cannot be written within the {max}-byte statement limit (its key or its numeric values alone are too long)"
    )]
    RowTooLong { table: String, max: usize },
}

/// A row no statement can hold fails the backup: it would not restore.
impl crate::error::Classify for InsertError {
    fn kind(&self) -> crate::error::Kind {
        match self {
            InsertError::RowTooLong { .. } => crate::error::Kind::Failed,
        }
    }
}

/// Writes the rows of one table as SQL text. A flushed writer holds no rows, so clones of it can
/// render pages of one table on several threads.
#[derive(Debug, Clone)]
pub(crate) struct InsertWriter {
    table: String,
    table_ident: String,
    column_idents: Vec<String>,
    key: Vec<usize>,
    prefix: String,
    max: usize,
    target: usize,
    pending: String,
}

impl InsertWriter {
    /// `columns` names the cells of every row in order; `key` indexes the cells that identify a
    /// row (the rowid, or the primary key of a WITHOUT ROWID table), used by split rows' appends.
    pub(crate) fn new(table: &str, columns: &[String], key: Vec<usize>) -> Self {
        Self::with_limits(
            table,
            columns,
            key,
            MAX_STATEMENT_BYTES,
            TARGET_STATEMENT_BYTES,
        )
    }

    /// As [`InsertWriter::new`] with other limits, so tests can exercise splitting with small
    /// values.
    pub(crate) fn with_limits(
        table: &str,
        columns: &[String],
        key: Vec<usize>,
        max: usize,
        target: usize,
    ) -> Self {
        let table_ident = quote_ident(table);
        let column_idents: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
        let prefix = format!(
            "INSERT INTO {table_ident}({}) VALUES\n",
            column_idents.join(",")
        );
        InsertWriter {
            table: table.to_string(),
            table_ident,
            column_idents,
            key,
            prefix,
            max,
            target: target.min(max),
            pending: String::new(),
        }
    }

    /// Appends the statements for `row` (cells as SQL literals) to `out`. A row may stay pending
    /// until more rows arrive or [`InsertWriter::flush`] is called.
    pub(crate) fn push_row(&mut self, row: &[&str], out: &mut String) -> Result<(), InsertError> {
        let tuple_len = row.iter().map(|c| c.len()).sum::<usize>() + row.len().max(1) + 1;
        let alone = self.prefix.len() + tuple_len + 2;
        if alone > self.max {
            self.flush(out);
            return self.write_split_row(row, out);
        }
        if !self.pending.is_empty() && self.pending.len() + 2 + tuple_len + 2 > self.target {
            self.flush(out);
        }
        if self.pending.is_empty() {
            self.pending.push_str(&self.prefix);
        } else {
            self.pending.push_str(",\n");
        }
        push_tuple(&mut self.pending, row.iter().copied());
        Ok(())
    }

    /// The cells that identify a row.
    pub(crate) fn key(&self) -> &[usize] {
        &self.key
    }

    /// The bytes of the statement still pending, which [`InsertWriter::flush`] will write.
    pub(crate) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Ends the pending statement, if any.
    pub(crate) fn flush(&mut self, out: &mut String) {
        if !self.pending.is_empty() {
            out.push_str(&self.pending);
            out.push_str(";\n");
            self.pending.clear();
        }
    }

    fn write_split_row(&self, row: &[&str], out: &mut String) -> Result<(), InsertError> {
        let too_long = || InsertError::RowTooLong {
            table: self.table.clone(),
            max: self.max,
        };
        let mut candidates: Vec<usize> = (0..row.len())
            .filter(|i| !self.key.contains(i) && literal_kind(row[*i]) != LiteralKind::Other)
            .collect();
        candidates.sort_by_key(|i| std::cmp::Reverse(row[*i].len()));
        let mut cells: Vec<&str> = row.to_vec();
        let mut length =
            self.prefix.len() + row.iter().map(|c| c.len()).sum::<usize>() + row.len() + 3;
        let mut moved = Vec::new();
        for i in candidates {
            if length <= self.max {
                break;
            }
            let placeholder = placeholder(literal_kind(row[i]));
            length = length - row[i].len() + placeholder.len();
            cells[i] = placeholder;
            moved.push(i);
        }
        if length > self.max {
            return Err(too_long());
        }
        out.push_str(&self.prefix);
        push_tuple(out, cells.iter().copied());
        out.push_str(";\n");

        let where_clause = self.where_clause(row);
        for i in moved {
            let column = &self.column_idents[i];
            let kind = literal_kind(row[i]);
            let (open, close) = append_wrapper(kind);
            let head = format!("UPDATE {} SET {column}={open}{column}||", self.table_ident);
            let overhead = head.len() + close.len() + where_clause.len() + 2;
            let (lit_open, lit_close) = chunk_delimiters(kind);
            let budget = self
                .max
                .checked_sub(overhead + lit_open.len() + lit_close.len())
                .filter(|b| *b >= 16)
                .ok_or_else(too_long)?;
            for chunk in chunks(row[i], kind, budget) {
                out.push_str(&head);
                out.push_str(lit_open);
                out.push_str(chunk);
                out.push_str(lit_close);
                out.push_str(close);
                out.push_str(&where_clause);
                out.push_str(";\n");
            }
        }
        Ok(())
    }

    fn where_clause(&self, row: &[&str]) -> String {
        let names: Vec<&str> = self
            .key
            .iter()
            .map(|i| self.column_idents[*i].as_str())
            .collect();
        let values: Vec<&str> = self.key.iter().map(|i| row[*i]).collect();
        if names.len() == 1 {
            format!(" WHERE {}={}", names[0], values[0])
        } else {
            format!(" WHERE ({})=({})", names.join(","), values.join(","))
        }
    }
}

fn push_tuple<'a>(out: &mut String, cells: impl Iterator<Item = &'a str>) {
    out.push('(');
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(cell);
    }
    out.push(')');
}

fn placeholder(kind: LiteralKind) -> &'static str {
    match kind {
        LiteralKind::Blob => "X''",
        _ => "''",
    }
}

/// `||` on two BLOBs yields TEXT holding the same bytes; the CAST makes it a BLOB again.
fn append_wrapper(kind: LiteralKind) -> (&'static str, &'static str) {
    match kind {
        LiteralKind::Blob => ("CAST(", " AS BLOB)"),
        _ => ("", ""),
    }
}

fn chunk_delimiters(kind: LiteralKind) -> (&'static str, &'static str) {
    match kind {
        LiteralKind::Blob => ("X'", "'"),
        LiteralKind::HexText => ("CAST(X'", "' AS TEXT)"),
        LiteralKind::CrText => ("replace('", CR_TEXT_CLOSE),
        _ => ("'", "'"),
    }
}

/// Splits a literal's payload into pieces of at most `budget` bytes, each a valid payload on its
/// own: hex at even offsets, text at character boundaries, never inside a doubled `''` nor inside
/// a CR's stand-in.
fn chunks(literal: &str, kind: LiteralKind, budget: usize) -> Vec<&str> {
    let (open, close) = chunk_delimiters(kind);
    let inner = &literal[open.len()..literal.len() - close.len()];
    let mut pieces = Vec::new();
    let mut pos = 0;
    while pos < inner.len() {
        let mut end = (pos + budget).min(inner.len());
        if matches!(kind, LiteralKind::Text | LiteralKind::CrText) {
            while !inner.is_char_boundary(end) {
                end -= 1;
            }
            if kind == LiteralKind::CrText
                && inner.as_bytes()[..end].ends_with(&CR_MARK.as_bytes()[..1])
                && inner.as_bytes()[end..].starts_with(&CR_MARK.as_bytes()[1..])
            {
                end -= 1;
            }
            end = quote_safe_cut(inner.as_bytes(), end);
        } else {
            end -= (end - pos) % 2;
        }
        pieces.push(&inner[pos..end]);
        pos = end;
    }
    pieces
}

/// Moves a cut point back by one when it would fall between the two quotes of an escaped `''`.
/// Quotes in a rendered text payload come in aligned pairs, so a cut inside a run of quotes is
/// safe exactly when it is an even distance from the run's start.
fn quote_safe_cut(inner: &[u8], end: usize) -> usize {
    if end == inner.len() || end == 0 || inner[end - 1] != b'\'' {
        return end;
    }
    let mut start = end;
    while start > 0 && inner[start - 1] == b'\'' {
        start -= 1;
    }
    if (end - start).is_multiple_of(2) {
        end
    } else {
        end - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn write(w: &mut InsertWriter, rows: &[Vec<&str>]) -> String {
        let mut out = String::new();
        for row in rows {
            w.push_row(row, &mut out).unwrap();
        }
        w.flush(&mut out);
        out
    }

    #[test]
    fn packs_rows_into_one_statement() {
        let mut w = InsertWriter::new("t", &cols(&["rowid", "a"]), vec![0]);
        let out = write(&mut w, &[vec!["1", "'x'"], vec!["2", "NULL"]]);
        assert_eq!(
            out,
            "INSERT INTO \"t\"(\"rowid\",\"a\") VALUES\n(1,'x'),\n(2,NULL);\n"
        );
    }

    #[test]
    fn starts_a_new_statement_at_the_target_size() {
        let mut w = InsertWriter::with_limits("t", &cols(&["a"]), vec![0], 1000, 70);
        let rows = [
            vec!["'aaaaaaaaaa'"],
            vec!["'bbbbbbbbbb'"],
            vec!["'cccccccccc'"],
        ];
        let out = write(&mut w, &rows);
        assert_eq!(out.matches("INSERT").count(), 2, "{out}");
        for stmt in out.split_inclusive(";\n") {
            assert!(stmt.len() <= 70, "{stmt}");
        }
    }

    #[test]
    fn splits_long_values_into_appends() {
        let hex = "00112233445566778899AABBCCDDEEFF".repeat(8);
        let cases = [
            (format!("'{}'", "0123456789".repeat(20)), "''", "'"),
            (format!("X'{hex}'"), "X''", "X'"),
            (format!("CAST(X'{hex}' AS TEXT)"), "''", "CAST(X'"),
            (format!("'{}'", "it''s ''q'' ".repeat(20)), "''", "'"),
            (format!("'{}'", "żółw ".repeat(30)), "''", "'"),
            (
                crate::model::value::literal(crate::model::value::ValueRef::Text(
                    "line\r\n it's ".repeat(30).as_bytes(),
                )),
                "''",
                "replace('",
            ),
        ];
        for (lit, placeholder, chunk_open) in &cases {
            let lit = lit.as_str();
            let mut w = InsertWriter::with_limits("t", &cols(&["id", "v"]), vec![0], 90, 90);
            let out = write(&mut w, &[vec!["7", lit]]);
            let stmts: Vec<&str> = out.split_inclusive(";\n").collect();
            assert_eq!(
                stmts[0],
                format!("INSERT INTO \"t\"(\"id\",\"v\") VALUES\n(7,{placeholder});\n")
            );
            assert!(stmts.len() > 2, "{out}");
            for s in &stmts {
                assert!(s.len() <= 90, "{s}");
            }
            for s in &stmts[1..] {
                assert!(s.contains(&format!("||{chunk_open}")), "{s}");
                assert!(s.ends_with(" WHERE \"id\"=7;\n"), "{s}");
            }
        }
    }

    #[test]
    fn text_chunks_reassemble_and_never_split_an_escape() {
        let lit = "'a''b''''c''d'''";
        for budget in 1..12 {
            let budget = budget.max(2);
            let pieces = chunks(lit, LiteralKind::Text, budget);
            assert_eq!(pieces.concat(), &lit[1..lit.len() - 1]);
            for p in pieces {
                let run_ok = p.split(|c| c != '\'').all(|run| run.len() % 2 == 0);
                assert!(run_ok, "budget {budget}: piece {p:?}");
            }
        }
    }

    /// A CR text cut into appends, whatever the budget: no piece splits a stand-in or an escaped
    /// quote, and SQLite joins the pieces' values back into the text.
    #[test]
    fn cr_text_chunks_reassemble_within_any_budget() {
        use crate::model::value::{ValueRef, literal};
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let text = format!(
            "{}a''b\\\r\r\r{}\r",
            "\r".repeat(20),
            "żółw'🐢\r\n".repeat(5)
        );
        let lit = literal(ValueRef::Text(text.as_bytes()));
        assert_eq!(literal_kind(&lit), LiteralKind::CrText, "{lit}");
        let (open, close) = chunk_delimiters(LiteralKind::CrText);
        for budget in 8..48 {
            let pieces = chunks(&lit, LiteralKind::CrText, budget);
            assert!(pieces.len() > 1, "budget {budget}");
            let mut joined = String::from("''");
            for p in &pieces {
                assert!(p.len() <= budget, "budget {budget}: piece {p:?}");
                joined.push_str(&format!("||{open}{p}{close}"));
            }
            let got: String = conn
                .query_row(&format!("SELECT {joined}"), [], |r| r.get(0))
                .unwrap();
            assert_eq!(got, text, "budget {budget}");
        }
    }

    #[test]
    fn composite_keys_in_appends() {
        let mut w = InsertWriter::with_limits("t", &cols(&["a", "b", "v"]), vec![0, 1], 80, 80);
        let long = format!("'{}'", "x".repeat(100));
        let out = write(&mut w, &[vec!["1", "'k'", &long]]);
        assert!(out.contains(" WHERE (\"a\",\"b\")=(1,'k');\n"), "{out}");
    }

    #[test]
    fn a_row_that_cannot_fit_is_an_error() {
        let mut w = InsertWriter::with_limits("t", &cols(&["a", "b"]), vec![0], 40, 40);
        let key = format!("'{}'", "k".repeat(60));
        let mut out = String::new();
        assert!(matches!(
            w.push_row(&[&key, "1"], &mut out),
            Err(InsertError::RowTooLong { .. })
        ));
    }
}
