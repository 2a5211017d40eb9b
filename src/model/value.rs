//! Lossless SQL literals for SQLite values.
//!
//! A backup is SQL, so every value must come back from its literal with the same storage class
//! and the same bits. Integers are written in full (never through a JSON number), reals with the
//! shortest representation that parses back to the same double, BLOBs as `X'..'`, text that a
//! plain literal cannot carry (an embedded NUL, invalid UTF-8) as `CAST(X'..' AS TEXT)`, and text
//! holding a carriage return through `replace()` with a stand-in for each CR, so that a
//! line-based reader of the SQL (the stock `sqlite3` shell drops a CR that ends a line; editors
//! and git rewrite line ends) cannot change it.

use std::fmt::Write as _;

/// A value as SQLite stores it, borrowed from wherever it was read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    Null,
    Integer(i64),
    Real(f64),
    Text(&'a [u8]),
    Blob(&'a [u8]),
}

impl<'a> From<rusqlite::types::ValueRef<'a>> for ValueRef<'a> {
    fn from(v: rusqlite::types::ValueRef<'a>) -> Self {
        use rusqlite::types::ValueRef as R;
        match v {
            R::Null => ValueRef::Null,
            R::Integer(i) => ValueRef::Integer(i),
            R::Real(f) => ValueRef::Real(f),
            R::Text(t) => ValueRef::Text(t),
            R::Blob(b) => ValueRef::Blob(b),
        }
    }
}

/// Appends the SQL literal for `value` to `out`.
pub fn render(value: ValueRef<'_>, out: &mut String) {
    match value {
        ValueRef::Null => out.push_str("NULL"),
        ValueRef::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        ValueRef::Real(f) => render_real(f, out),
        ValueRef::Text(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => render_str(text, out),
            Err(_) => render_text_bytes(bytes, out),
        },
        ValueRef::Blob(bytes) => render_blob(bytes, out),
    }
}

/// What `wrangler d1 execute --file` and `wrangler d1 migrations apply` look for, as they look
/// for it: case and spacing exact, anywhere in the file, string literals included. A file holding
/// it loses its first `BEGIN TRANSACTION;` and first `COMMIT;`, wherever they are, and one holding
/// it twice is refused; a file without it is left alone.
pub const WRANGLER_TRANSACTION: &str = "BEGIN TRANSACTION";

/// Appends the literal for a text value already known to be UTF-8 (as D1's JSON carries it): one
/// scan for `'`, NUL and CR, which most text holds none of, and one for
/// [`WRANGLER_TRANSACTION`]: a text holding it is written as its bytes, so no export or import
/// file holds it for wrangler to change the text or refuse the file.
pub fn render_str(text: &str, out: &mut String) {
    static WRANGLER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(WRANGLER_TRANSACTION));
    if WRANGLER.find(text.as_bytes()).is_some() {
        return render_text_bytes(text.as_bytes(), out);
    }
    match memchr::memchr3(b'\'', 0, b'\r', text.as_bytes()) {
        None => {
            out.reserve(text.len() + 2);
            out.push('\'');
            out.push_str(text);
            out.push('\'');
        }
        Some(_) if text.as_bytes().contains(&0) => render_text_bytes(text.as_bytes(), out),
        Some(_) if text.as_bytes().contains(&b'\r') => render_cr_text(text, out),
        Some(_) => quote_text(text, out),
    }
}

/// What stands for a CR inside the quotes of a text holding one, as `sqlite3 .dump` writes it:
/// `replace('a\rb','\r',char(13))`. It is a backslash and an `r`, two different characters, so
/// no occurrence can straddle an edge between the text's own characters and a stand-in.
pub const CR_MARK: &str = "\\r";

/// The end of a CR text literal, after its payload.
pub const CR_TEXT_CLOSE: &str = "','\\r',char(13))";

/// Text holding a CR as `replace('..','\r',char(13))`: the quotes hold no CR, so no reader that
/// rewrites line ends can change the value, and it is one call of constant depth wherever a
/// literal may stand (a VALUES tuple, an `||` append, a WHERE key), however many CRs it holds.
/// A text that already holds the two characters of the stand-in is written as its bytes.
fn render_cr_text(text: &str, out: &mut String) {
    if memchr::memmem::find(text.as_bytes(), CR_MARK.as_bytes()).is_some() {
        return render_text_bytes(text.as_bytes(), out);
    }
    out.reserve(text.len() + 32);
    out.push_str("replace('");
    let mut rest = text;
    while let Some(at) = memchr::memchr2(b'\'', b'\r', rest.as_bytes()) {
        out.push_str(&rest[..at]);
        out.push_str(if rest.as_bytes()[at] == b'\'' {
            "''"
        } else {
            CR_MARK
        });
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
    out.push_str(CR_TEXT_CLOSE);
}

/// A text SQL cannot write between quotes (not UTF-8, or holding NUL, where a quoted string would
/// end), as its bytes.
fn render_text_bytes(bytes: &[u8], out: &mut String) {
    out.push_str("CAST(");
    render_blob(bytes, out);
    out.push_str(" AS TEXT)");
}

/// A value as a `find` line carries it, losslessly and with its storage class plain to see: NULL
/// as `null`; an integer as a JSON number written in full (every i64 exact in the text; a reader
/// that parses numbers as doubles must take it as a big integer); UTF-8 text as a string; text
/// that is not UTF-8 as `{"text_hex": …}`; a BLOB as `{"blob": hex}`; a real as
/// `{"real": shortest round-trip decimal, "bits": its IEEE 754 bits as 16 hex digits}`, so
/// `-0.0` stays apart from `0.0` and infinities are `inf` and `-inf`.
pub fn json_cell(value: ValueRef<'_>) -> serde_json::Value {
    use serde_json::{Value, json};
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => json!(i),
        ValueRef::Real(f) => {
            json!({"real": format!("{f:?}"), "bits": format!("{:016x}", f.to_bits())})
        }
        ValueRef::Text(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => json!(text),
            Err(_) => json!({"text_hex": hex::encode(bytes)}),
        },
        ValueRef::Blob(bytes) => json!({"blob": hex::encode(bytes)}),
    }
}

/// The literal for `value` as a new string.
pub fn literal(value: ValueRef<'_>) -> String {
    let mut out = String::new();
    render(value, &mut out);
    out
}

/// Reals: Rust's `{:?}` is the shortest text that reads back as the same double, and always has a
/// `.` or an exponent, so SQLite parses it as REAL rather than INTEGER. SQLite cannot store NaN
/// (it becomes NULL) and reads `9.0e999` as infinity, as its own `quote()` writes it.
fn render_real(f: f64, out: &mut String) {
    if f.is_nan() {
        out.push_str("NULL");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "9.0e999" } else { "-9.0e999" });
    } else {
        let _ = write!(out, "{f:?}");
    }
}

fn render_blob(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.reserve(bytes.len() * 2 + 3);
    out.push_str("X'");
    // Digits a kilobyte at a time: a BLOB is most of a wide row, and pushing them as chars one by
    // one costs a capacity check and a UTF-8 encoding each.
    let mut digits = [0u8; 1024];
    for chunk in bytes.chunks(digits.len() / 2) {
        for (pair, &b) in digits.chunks_exact_mut(2).zip(chunk) {
            pair[0] = HEX[usize::from(b >> 4)];
            pair[1] = HEX[usize::from(b & 0xf)];
        }
        let hex = &digits[..chunk.len() * 2];
        out.push_str(std::str::from_utf8(hex).expect("hex digits are ASCII"));
    }
    out.push('\'');
}

/// Appends `'text'` with every `'` doubled.
pub fn quote_text(text: &str, out: &mut String) {
    out.reserve(text.len() + 2);
    out.push('\'');
    for (i, part) in text.split('\'').enumerate() {
        if i > 0 {
            out.push_str("''");
        }
        out.push_str(part);
    }
    out.push('\'');
}

/// An identifier in double quotes with every `"` doubled: safe for any table or column name,
/// keywords, spaces and `x"; DROP TABLE users; --` included.
pub fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    out.push_str(&name.replace('"', "\"\""));
    out.push('"');
    out
}

/// The kind of literal a rendered value is, which decides how a long one is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiteralKind {
    /// `'...'`
    Text,
    /// `X'...'`
    Blob,
    /// `CAST(X'...' AS TEXT)`
    HexText,
    /// `replace('...','\r',char(13))`: text holding a CR
    CrText,
    /// A number or NULL: always short.
    Other,
}

/// Classifies a literal produced by [`render`] or by SQLite's `quote()`.
pub fn literal_kind(literal: &str) -> LiteralKind {
    if literal.starts_with('\'') {
        LiteralKind::Text
    } else if literal.starts_with("X'") || literal.starts_with("x'") {
        LiteralKind::Blob
    } else if literal.starts_with("CAST(X'") {
        LiteralKind::HexText
    } else if literal.starts_with("replace('") {
        LiteralKind::CrText
    } else {
        LiteralKind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_cells_table() {
        let cases: Vec<(ValueRef, &str)> = vec![
            (ValueRef::Null, "null"),
            (ValueRef::Integer(i64::MAX), "9223372036854775807"),
            (ValueRef::Integer(i64::MIN), "-9223372036854775808"),
            (
                ValueRef::Real(0.1),
                r#"{"bits":"3fb999999999999a","real":"0.1"}"#,
            ),
            (
                ValueRef::Real(0.0),
                r#"{"bits":"0000000000000000","real":"0.0"}"#,
            ),
            (
                ValueRef::Real(-0.0),
                r#"{"bits":"8000000000000000","real":"-0.0"}"#,
            ),
            (
                ValueRef::Real(f64::NEG_INFINITY),
                r#"{"bits":"fff0000000000000","real":"-inf"}"#,
            ),
            (ValueRef::Text(b"it's \"x\""), r#""it's \"x\"""#),
            (ValueRef::Text(b"\xff"), r#"{"text_hex":"ff"}"#),
            (ValueRef::Blob(b""), r#"{"blob":""}"#),
            (ValueRef::Blob(b"\x00\x01"), r#"{"blob":"0001"}"#),
        ];
        for (value, want) in cases {
            assert_eq!(json_cell(value).to_string(), want, "{value:?}");
        }
    }

    #[test]
    fn literals_table() {
        let cases: Vec<(ValueRef, &str)> = vec![
            (ValueRef::Null, "NULL"),
            (ValueRef::Integer(0), "0"),
            (ValueRef::Integer(-1), "-1"),
            (ValueRef::Integer(9_007_199_254_740_993), "9007199254740993"),
            (ValueRef::Integer(i64::MAX), "9223372036854775807"),
            (ValueRef::Integer(i64::MIN), "-9223372036854775808"),
            (ValueRef::Real(1.0), "1.0"),
            (ValueRef::Real(0.1), "0.1"),
            (ValueRef::Real(-2.5e-300), "-2.5e-300"),
            (ValueRef::Real(1e16), "1e16"),
            (ValueRef::Real(f64::INFINITY), "9.0e999"),
            (ValueRef::Real(f64::NEG_INFINITY), "-9.0e999"),
            (ValueRef::Real(f64::NAN), "NULL"),
            (ValueRef::Text(b""), "''"),
            (ValueRef::Text(b"it's"), "'it''s'"),
            (ValueRef::Text(b"a\nb;\n--c"), "'a\nb;\n--c'"),
            (
                ValueRef::Text(b"a\nb;\r\n--c"),
                "replace('a\nb;\\r\n--c','\\r',char(13))",
            ),
            (ValueRef::Text(b"\r"), "replace('\\r','\\r',char(13))"),
            (
                ValueRef::Text(b"\r\r\n\r"),
                "replace('\\r\\r\n\\r','\\r',char(13))",
            ),
            (
                ValueRef::Text(b"it's\r"),
                "replace('it''s\\r','\\r',char(13))",
            ),
            (ValueRef::Text(b"\\\r"), "replace('\\\\r','\\r',char(13))"),
            (ValueRef::Text(b"\\r\r"), "CAST(X'5C720D' AS TEXT)"),
            (ValueRef::Text(b"\\r"), "'\\r'"),
            (ValueRef::Text(b"a\0\r"), "CAST(X'61000D' AS TEXT)"),
            (ValueRef::Text("żółw 🐢".as_bytes()), "'żółw 🐢'"),
            (ValueRef::Text(b"a\0b"), "CAST(X'610062' AS TEXT)"),
            (ValueRef::Text(b"\xff"), "CAST(X'FF' AS TEXT)"),
            (ValueRef::Blob(b""), "X''"),
            (ValueRef::Blob(&[0, 1, 0xab, 0xff]), "X'0001ABFF'"),
            // What wrangler strips or refuses, case and spacing exact, goes as bytes.
            (
                ValueRef::Text(b"BEGIN TRANSACTION"),
                "CAST(X'424547494E205452414E53414354494F4E' AS TEXT)",
            ),
            (
                ValueRef::Text(b"a\rBEGIN TRANSACTION;"),
                "CAST(X'610D424547494E205452414E53414354494F4E3B' AS TEXT)",
            ),
            (
                ValueRef::Text(b"begin transaction;"),
                "'begin transaction;'",
            ),
            (
                ValueRef::Text(b"BEGIN  TRANSACTION"),
                "'BEGIN  TRANSACTION'",
            ),
            (ValueRef::Text(b"run COMMIT; then"), "'run COMMIT; then'"),
        ];
        for (value, want) in cases {
            assert_eq!(literal(value), want, "{value:?}");
        }
    }

    /// Every literal means its value to SQLite itself: same storage class, same bytes.
    #[test]
    fn sqlite_reads_each_text_literal_back_exactly() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for text in [
            "",
            "plain",
            "it's",
            "a\r\nb",
            "\r",
            "\r\r\r",
            "\n\r",
            "end\r",
            "q''\r''",
            "żółw\r🐢",
            "\\\r",
            "\\r\r",
            "r\r\\",
        ] {
            let lit = literal(ValueRef::Text(text.as_bytes()));
            let (kind, got): (String, String) = conn
                .query_row(&format!("SELECT typeof({lit}), {lit}"), [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .unwrap();
            assert_eq!((kind.as_str(), got.as_str()), ("text", text), "{lit}");
            assert!(!lit.contains('\r'), "{lit}");
        }
    }

    #[test]
    fn identifiers_table() {
        for (name, want) in [
            ("users", "\"users\""),
            ("select", "\"select\""),
            ("with space", "\"with space\""),
            (
                "x\"; DROP TABLE users; --",
                "\"x\"\"; DROP TABLE users; --\"",
            ),
            ("ünïcödé", "\"ünïcödé\""),
        ] {
            assert_eq!(quote_ident(name), want);
        }
    }

    #[test]
    fn kinds_table() {
        for (lit, kind) in [
            ("'a'", LiteralKind::Text),
            ("X'00'", LiteralKind::Blob),
            ("CAST(X'00' AS TEXT)", LiteralKind::HexText),
            ("replace('a\\r','\\r',char(13))", LiteralKind::CrText),
            ("12", LiteralKind::Other),
            ("NULL", LiteralKind::Other),
            ("-1.5e10", LiteralKind::Other),
        ] {
            assert_eq!(literal_kind(lit), kind, "{lit}");
        }
    }
}
