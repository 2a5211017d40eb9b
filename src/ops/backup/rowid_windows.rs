//! Rowid windows: how one reader of a large rowid table keeps the source busy.
//!
//! A keyset page starts after the last key of the page before, so a reader that pages by key
//! asks for a page only once the one before has arrived, and the source idles for a round trip
//! (and the client's parse) every page. When a table is keyed by its rowid and its largest
//! rowid is known, a reader can instead ask for consecutive rowid ranges
//! (`rowid > after AND rowid <= upto`), each sized from the density of the rows read so far to
//! hold about a page, and ask for the next range before the rows of the one before arrive. The
//! density is only an estimate, so it never decides what is read: a range holding more rows than
//! its page limit goes on after its last key, and an empty range makes the next ones wider.

/// How far the rowids-per-row estimate may move on one page: a run of empty ranges crosses a
/// gap of `G` rowids in about `log8(G / span)` requests, and one odd page cannot make the next
/// range huge or tiny.
const DENSITY_STEP: f64 = 8.0;

/// One reader's rowid range, as it is handed out in windows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Windows {
    /// The rowid the next window starts after.
    next: i64,
    /// The last rowid of the reader's range.
    end: i64,
    /// Whether the last window is left open (`upto` none): the table's last reader also reads
    /// the rows added past the table's largest rowid while the backup runs.
    open: bool,
    /// Rowids per row, as measured on the pages read so far.
    rowids_per_row: f64,
    done: bool,
}

impl Windows {
    /// The range after `after` up to `end` (and past it when `open`), at `rowids_per_row` as the
    /// first page measured it.
    pub(crate) fn new(after: i64, end: i64, open: bool, rowids_per_row: f64) -> Self {
        Windows {
            next: after,
            end,
            open,
            rowids_per_row: sane(rowids_per_row),
            done: false,
        }
    }

    /// The rowids per row of a page of `rows` rows that covered `first..=last`.
    pub(crate) fn density(rows: usize, first: i64, last: i64) -> f64 {
        (last as f64 - first as f64 + 1.0) / rows.max(1) as f64
    }

    /// The next window `(after, upto)` to hold about `rows` rows (`upto` none for the open last
    /// window), or none when the whole range has been asked for.
    pub(crate) fn next(&mut self, rows: usize) -> Option<(i64, Option<i64>)> {
        if self.done {
            return None;
        }
        let after = self.next;
        let left = self.end as i128 - after as i128;
        let span = (rows.max(1) as f64 * self.rowids_per_row).ceil().max(1.0);
        if left <= 0 || span >= left as f64 {
            self.done = true;
            if left <= 0 && !self.open {
                return None;
            }
            return Some((after, (!self.open).then_some(self.end)));
        }
        let upto = after + span as i64;
        self.next = upto;
        Some((after, Some(upto)))
    }

    /// Learns from a window's page: `rows` rows over `covered` rowids (the whole window when it
    /// was read to its end, up to its last row when it goes on).
    pub(crate) fn learn(&mut self, rows: usize, covered: i64) {
        let was = self.rowids_per_row;
        let measured = if rows == 0 {
            was * DENSITY_STEP
        } else {
            covered.max(1) as f64 / rows as f64
        };
        self.rowids_per_row = sane(measured.clamp(was / DENSITY_STEP, was * DENSITY_STEP));
    }
}

/// A density that sizes windows: at least a row per rowid (rowids are distinct), finite.
fn sane(rowids_per_row: f64) -> f64 {
    if rowids_per_row.is_finite() {
        rowids_per_row.clamp(1.0, i64::MAX as f64)
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Asked = Vec<(i64, Option<i64>)>;

    fn windows(mut w: Windows, rows: usize, most: usize) -> Asked {
        std::iter::from_fn(|| w.next(rows)).take(most).collect()
    }

    #[test]
    fn windows_table() {
        let cases: Vec<(&str, Windows, usize, Asked)> = vec![
            (
                "dense, bounded",
                Windows::new(100, 400, false, 1.0),
                100,
                vec![(100, Some(200)), (200, Some(300)), (300, Some(400))],
            ),
            (
                "dense, open: the last window reads on",
                Windows::new(100, 400, true, 1.0),
                100,
                vec![(100, Some(200)), (200, Some(300)), (300, None)],
            ),
            (
                "a short last window ends at the range's end",
                Windows::new(0, 250, false, 1.0),
                100,
                vec![(0, Some(100)), (100, Some(200)), (200, Some(250))],
            ),
            (
                "half the rowids used: windows twice as wide",
                Windows::new(0, 1000, false, 2.0),
                100,
                vec![
                    (0, Some(200)),
                    (200, Some(400)),
                    (400, Some(600)),
                    (600, Some(800)),
                    (800, Some(1000)),
                ],
            ),
            (
                "nothing left, bounded",
                Windows::new(500, 500, false, 1.0),
                100,
                vec![],
            ),
            (
                "nothing left, open: one window for rows added since",
                Windows::new(500, 500, true, 1.0),
                100,
                vec![(500, None)],
            ),
            (
                "negative rowids",
                Windows::new(-300, -100, false, 1.0),
                100,
                vec![(-300, Some(-200)), (-200, Some(-100))],
            ),
            (
                "near the largest rowid: no overflow",
                Windows::new(i64::MAX - 150, i64::MAX, true, 1.0),
                100,
                vec![(i64::MAX - 150, Some(i64::MAX - 50)), (i64::MAX - 50, None)],
            ),
            (
                "a huge density is one window",
                Windows::new(i64::MIN, i64::MAX, false, 1e30),
                100,
                vec![(i64::MIN, Some(i64::MAX))],
            ),
            (
                "a nonsense density counts as dense",
                Windows::new(0, 300, false, f64::NAN),
                100,
                vec![(0, Some(100)), (100, Some(200)), (200, Some(300))],
            ),
        ];
        for (name, w, rows, want) in cases {
            assert_eq!(windows(w, rows, 100), want, "{name}");
        }
    }

    #[test]
    fn learning_table() {
        // (rowids per row before, rows, covered, after)
        let cases = [
            (1.0, 100, 100, 1.0),
            (1.0, 100, 300, 3.0),
            (4.0, 100, 100, 1.0),
            (1.0, 100, 10_000, 8.0),
            (64.0, 100, 100, 8.0),
            (1.0, 0, 100, 8.0),
            (8.0, 0, 100, 64.0),
            (1.0, 100, 0, 1.0),
            (i64::MAX as f64, 0, 0, i64::MAX as f64),
        ];
        for (was, rows, covered, want) in cases {
            let mut w = Windows::new(0, 1_000_000, false, was);
            w.learn(rows, covered);
            assert_eq!(
                w.rowids_per_row, want,
                "{was} rowids a row, then {rows} rows over {covered}"
            );
        }
    }

    #[test]
    fn density_of_a_page() {
        assert_eq!(Windows::density(100, 1, 100), 1.0);
        assert_eq!(Windows::density(100, 1, 200), 2.0);
        assert_eq!(Windows::density(0, 5, 5), 1.0);
        assert_eq!(Windows::density(2, i64::MIN, i64::MAX), 2f64.powi(63));
    }

    #[test]
    fn empty_windows_cross_a_gap_in_few_requests() {
        // Rows at 1..=1000 and past 10^15: after the first page, empty windows widen until one
        // reaches past the gap.
        let mut w = Windows::new(1000, 1_000_000_000_000_100, false, 1.0);
        let mut asked = 0;
        while let Some((_, upto)) = w.next(1000) {
            asked += 1;
            let upto = upto.expect("bounded");
            if upto >= 1_000_000_000_000_000 {
                break;
            }
            w.learn(0, 0);
        }
        // Windows of 1000 * 8^k rowids: 8^14 > 10^12.
        assert!(asked <= 15, "{asked} windows to cross the gap");
    }
}
