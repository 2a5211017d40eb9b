//! A page of rows as SQL literals, packed into one buffer.
//!
//! A page costs its literal bytes plus four bytes a cell: no allocation per cell, so pages can be
//! sized by the bytes they carry (fewer requests to D1) while memory stays flat, and parsing a D1
//! answer copies each cell once, straight from the JSON parser.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};

/// Rows of `width` cells, each cell a lossless SQL literal.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    text: String,
    /// The end offset in `text` of every cell, row after row.
    ends: Vec<u32>,
    width: usize,
    /// The source stopped before the row limit because the page reached its byte bound: the
    /// table goes on after the last row even though the page is not full.
    cut: bool,
    /// Rows were left out because they did not arrive as the source wrote them (see
    /// [`Page::deserialize_with`]): the page must be read again another way.
    garbled: bool,
    /// The gauges a test counts this page on while it is alive.
    #[cfg(test)]
    held: Vec<gauge::Held>,
}

/// One row of a [`Page`].
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    text: &'a str,
    ends: &'a [u32],
    start: usize,
}

impl Page {
    pub fn new(width: usize) -> Page {
        Page {
            text: String::new(),
            ends: Vec::new(),
            width,
            cut: false,
            garbled: false,
            #[cfg(test)]
            held: Vec::new(),
        }
    }

    /// Counts the page on `held`'s gauge until it (and every clone of it) is dropped.
    #[cfg(test)]
    pub(crate) fn hold(&mut self, held: gauge::Held) {
        self.held.push(held);
    }

    /// Marks the page as stopped short of its row limit for its size (see [`Page::is_cut`]).
    pub fn mark_cut(&mut self) {
        self.cut = true;
    }

    /// Whether the table goes on after this page although it holds fewer rows than were asked
    /// for: a page ends the table only when it is short and not cut.
    pub fn is_cut(&self) -> bool {
        self.cut
    }

    /// Whether the table may go on after this page, read at a row limit of `limit`: it holds
    /// that many rows, or the source cut it short.
    pub fn goes_on(&self, limit: usize) -> bool {
        self.len() == limit || self.cut
    }

    /// Whether rows were left out because they did not arrive as the source wrote them.
    pub fn is_garbled(&self) -> bool {
        self.garbled
    }

    /// Appends a cell; every `width` cells make a row.
    pub fn push(&mut self, literal: &str) {
        self.text.push_str(literal);
        self.end_cell();
    }

    /// Appends a cell written by `write` straight into the page's buffer.
    pub fn push_with(&mut self, write: impl FnOnce(&mut String)) {
        write(&mut self.text);
        self.end_cell();
    }

    fn end_cell(&mut self) {
        let end = u32::try_from(self.text.len()).expect("a page holds under 4 GiB of literals");
        self.ends.push(end);
    }

    /// Cells per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Rows in the page (a trailing incomplete row is not counted).
    pub fn len(&self) -> usize {
        self.ends.len().checked_div(self.width).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of literals the page holds.
    pub fn literal_bytes(&self) -> usize {
        self.text.len()
    }

    /// Cells the page holds.
    pub fn cells(&self) -> usize {
        self.ends.len()
    }

    /// Whether any literal contains `c`.
    pub fn contains(&self, c: char) -> bool {
        self.text.contains(c)
    }

    pub fn row(&self, i: usize) -> Row<'_> {
        let first = i * self.width;
        let start = match first {
            0 => 0,
            _ => self.ends[first - 1] as usize,
        };
        Row {
            text: &self.text,
            ends: &self.ends[first..first + self.width],
            start,
        }
    }

    pub fn last(&self) -> Option<Row<'_>> {
        self.len().checked_sub(1).map(|i| self.row(i))
    }

    pub fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        (0..self.len()).map(|i| self.row(i))
    }
}

impl<'a> Row<'a> {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn cell(&self, i: usize) -> &'a str {
        let start = match i {
            0 => self.start,
            _ => self.ends[i - 1] as usize,
        };
        &self.text[start..self.ends[i] as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = &'a str> + '_ {
        (0..self.len()).map(|i| self.cell(i))
    }

    /// The cells into `cells` (cleared first), so a caller reuses one vector for every row.
    pub fn cells_into(&self, cells: &mut Vec<&'a str>) {
        cells.clear();
        cells.extend(self.iter());
    }
}

/// A page from JSON rows of strings (`[["1","'a'"],["2","NULL"]]`): every row must have the
/// first row's width; each string is copied into the page as the parser hands it over.
impl<'de> de::Deserialize<'de> for Page {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Page, D::Error> {
        Page::deserialize_with(deserializer, |page, literal| {
            page.push(literal);
            true
        })
    }
}

impl Page {
    /// A page from JSON rows of strings, each string handed to `cells`, which pushes the cells
    /// it holds (one, or several when a row travels as one string). When `cells` refuses a
    /// string (returns false), its row is left out, whatever it pushed, and the page is marked
    /// [`Page::is_garbled`].
    pub fn deserialize_with<'de, D: Deserializer<'de>>(
        deserializer: D,
        cells: Cells,
    ) -> Result<Page, D::Error> {
        deserializer.deserialize_seq(PageVisitor(cells))
    }
}

/// Pushes the cells a string holds into a page; false when the string is not what it should be.
type Cells = fn(&mut Page, &str) -> bool;

struct PageVisitor(Cells);

impl<'de> Visitor<'de> for PageVisitor {
    type Value = Page;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("rows of SQL literals")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut rows: A) -> Result<Page, A::Error> {
        let mut page = Page::new(0);
        let (mut before, mut first) = (0, true);
        while let Some(whole) = rows.next_element_seed(RowSeed(&mut page, self.0))? {
            if !whole {
                let text = match before {
                    0 => 0,
                    _ => page.ends[before - 1] as usize,
                };
                page.text.truncate(text);
                page.ends.truncate(before);
                page.garbled = true;
                continue;
            }
            let cells = page.ends.len() - before;
            if first {
                page.width = cells;
                first = false;
            } else if cells != page.width {
                return Err(de::Error::custom(format!(
                    "rows of different widths ({cells} cells after rows of {})",
                    page.width
                )));
            }
            before = page.ends.len();
        }
        Ok(page)
    }
}

/// A row's strings; its value is whether `cells` took every one.
struct RowSeed<'p>(&'p mut Page, Cells);

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row of SQL literals")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut cells: A) -> Result<bool, A::Error> {
        let mut whole = true;
        while let Some(taken) = cells.next_element_seed(CellSeed(self.0, self.1))? {
            whole &= taken;
        }
        Ok(whole)
    }
}

struct CellSeed<'p>(&'p mut Page, Cells);

impl<'de> DeserializeSeed<'de> for CellSeed<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for CellSeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a SQL literal as a string")
    }

    fn visit_str<E: de::Error>(self, literal: &str) -> Result<bool, E> {
        Ok((self.1)(self.0, literal))
    }
}

/// Pages alive at once, as a test of memory counts them: a [`Held`] is taken when a page is
/// asked for, moves into the page when it arrives ([`Page::hold`]) and is given back when the
/// page is dropped, so the gauge counts pages asked for, arriving and alive, and remembers the
/// most at any one time. Only test builds have it: a release page carries nothing for it.
#[cfg(test)]
pub(crate) mod gauge {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug, Default)]
    pub(crate) struct Gauge {
        now: AtomicUsize,
        most: AtomicUsize,
    }

    impl Gauge {
        /// One page more on the gauge, until the `Held` is dropped.
        pub(crate) fn take(self: &Arc<Self>) -> Held {
            let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            Held(self.clone())
        }

        pub(crate) fn now(&self) -> usize {
            self.now.load(Ordering::SeqCst)
        }

        /// The most pages held at once so far.
        pub(crate) fn most(&self) -> usize {
            self.most.load(Ordering::SeqCst)
        }
    }

    /// One page on a gauge; a clone is one page more.
    #[derive(Debug)]
    pub(crate) struct Held(Arc<Gauge>);

    impl Clone for Held {
        fn clone(&self) -> Self {
            self.0.take()
        }
    }

    impl Drop for Held {
        fn drop(&mut self) {
            self.0.now.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Whether a page is counted says nothing about its rows.
    impl PartialEq for Held {
        fn eq(&self, _: &Held) -> bool {
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(page: &Page) -> Vec<Vec<&str>> {
        page.rows().map(|r| r.iter().collect()).collect()
    }

    #[test]
    fn pushed_cells_come_back_as_rows() {
        let mut page = Page::new(3);
        for cell in ["1", "'a'", "NULL", "2", "''", "X'00'"] {
            page.push(cell);
        }
        page.push_with(|s| s.push('3'));
        assert_eq!(page.len(), 2, "the incomplete third row is not counted");
        assert_eq!(rows(&page), [["1", "'a'", "NULL"], ["2", "''", "X'00'"]]);
        assert_eq!(page.last().unwrap().cell(2), "X'00'");
        assert_eq!(page.literal_bytes(), 1 + 3 + 4 + 1 + 2 + 5 + 1);
    }

    #[test]
    fn refused_rows_are_left_out_and_mark_the_page() {
        let refuse_x = |page: &mut Page, literal: &str| {
            page.push(literal);
            literal != "x"
        };
        for (json, want, garbled) in [
            (
                r#"[["1","'a'"],["2","'b'"]]"#,
                vec![["1", "'a'"], ["2", "'b'"]],
                false,
            ),
            (r#"[["x","'a'"],["2","'b'"]]"#, vec![["2", "'b'"]], true),
            (
                r#"[["1","'a'"],["2","x"],["3","'c'"]]"#,
                vec![["1", "'a'"], ["3", "'c'"]],
                true,
            ),
            (r#"[["1","x"]]"#, vec![], true),
        ] {
            let mut de = serde_json::Deserializer::from_str(json);
            let page = Page::deserialize_with(&mut de, refuse_x).unwrap();
            assert_eq!(rows(&page), want, "{json}");
            assert_eq!(page.is_garbled(), garbled, "{json}");
            assert_eq!(page.literal_bytes(), want.concat().concat().len(), "{json}");
        }
    }

    #[test]
    fn json_rows_table() {
        for (json, want) in [
            (r#"[]"#, Ok(vec![])),
            (r#"[[]]"#, Ok(vec![])),
            (r#"[["1","'a'"]]"#, Ok(vec![vec!["1", "'a'"]])),
            (
                r#"[["1","'say \"hi\"'"],["2","'\u00e9\\'"]]"#,
                Ok(vec![vec!["1", "'say \"hi\"'"], vec!["2", "'é\\'"]]),
            ),
            (r#"[["1","2"],["3"]]"#, Err("different widths")),
            (r#"[["1"],["2","3"]]"#, Err("different widths")),
            (r#"[[],["1"]]"#, Err("different widths")),
            (r#"[["1",2]]"#, Err("invalid type")),
            (r#"[["1",null]]"#, Err("invalid type")),
        ] {
            let got = serde_json::from_str::<Page>(json);
            match want {
                Ok(want) => assert_eq!(rows(&got.unwrap()), want, "{json}"),
                Err(message) => {
                    let err = got.unwrap_err().to_string();
                    assert!(err.contains(message), "{json}: {err}");
                }
            }
        }
    }
}
