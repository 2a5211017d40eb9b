//! Answers that arrive in any order, handed on in the order they were asked for.
//!
//! A reader keeps two pages asked for so the source always has one waiting, but two requests
//! travel apart and the source may answer the later one first. Holding the reader's asking until
//! the earlier one arrives idles the source for a round trip; taking in whichever arrives and
//! holding it back only from the writer keeps both the source busy and the rows in key order.

use std::collections::{BTreeMap, BTreeSet};

/// Items keyed by where they go (`K`'s order), asked for and arrived.
#[derive(Debug)]
pub(super) struct InOrder<K, T> {
    asked: BTreeSet<K>,
    early: BTreeMap<K, T>,
}

impl<K: Ord + Copy, T> Default for InOrder<K, T> {
    fn default() -> Self {
        InOrder {
            asked: BTreeSet::new(),
            early: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Copy, T> InOrder<K, T> {
    /// Notes that the item going at `key` is on its way: nothing after it is handed on first.
    pub(super) fn asked(&mut self, key: K) {
        self.asked.insert(key);
    }

    /// Takes in what arrived for `key` (`None`: nothing to hand on, only the place to free) and
    /// hands on, in order, every item no longer behind one still on its way.
    pub(super) fn arrived(&mut self, key: K, item: Option<T>, out: &mut impl Extend<T>) {
        self.asked.remove(&key);
        if let Some(item) = item {
            self.early.insert(key, item);
        }
        while let Some(entry) = self.early.first_entry()
            && self.asked.first().is_none_or(|ahead| ahead > entry.key())
        {
            out.extend([entry.remove()]);
        }
    }

    /// Items that arrived and wait for one ahead of them.
    pub(super) fn held(&self) -> usize {
        self.early.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `steps` (`Ask(key)` or `Arrive(key, item)`) and gives what was handed on after each
    /// arrival.
    enum Step {
        Ask(u32),
        Arrive(u32, Option<&'static str>),
    }
    use Step::*;

    fn run(steps: &[Step]) -> Vec<Vec<&'static str>> {
        let mut order = InOrder::default();
        let mut handed = Vec::new();
        for step in steps {
            match *step {
                Ask(k) => order.asked(k),
                Arrive(k, item) => {
                    let mut out = Vec::new();
                    order.arrived(k, item, &mut out);
                    handed.push(out);
                }
            }
        }
        handed
    }

    #[test]
    fn in_order_table() {
        type Handed = Vec<Vec<&'static str>>;
        let cases: Vec<(&str, Vec<Step>, Handed)> = vec![
            (
                "in order: each handed on as it arrives",
                vec![Ask(1), Ask(2), Arrive(1, Some("a")), Arrive(2, Some("b"))],
                vec![vec!["a"], vec!["b"]],
            ),
            (
                "the later first: held until the earlier arrives",
                vec![Ask(1), Ask(2), Arrive(2, Some("b")), Arrive(1, Some("a"))],
                vec![vec![], vec!["a", "b"]],
            ),
            (
                "asked after an early arrival, ahead of it: still held",
                vec![
                    Ask(1),
                    Ask(3),
                    Arrive(3, Some("c")),
                    Ask(2),
                    Arrive(1, Some("a")),
                    Arrive(2, Some("b")),
                ],
                vec![vec![], vec!["a"], vec!["b", "c"]],
            ),
            (
                "asked after, behind: does not hold what is ahead",
                vec![Ask(1), Arrive(1, Some("a")), Ask(2), Arrive(2, Some("b"))],
                vec![vec!["a"], vec!["b"]],
            ),
            (
                "an empty answer frees its place",
                vec![Ask(1), Ask(2), Arrive(2, Some("b")), Arrive(1, None)],
                vec![vec![], vec!["b"]],
            ),
            (
                "nothing asked: handed on at once",
                vec![Arrive(5, Some("e"))],
                vec![vec!["e"]],
            ),
        ];
        for (name, steps, want) in cases {
            assert_eq!(run(&steps), want, "{name}");
        }
    }

    #[test]
    fn counts_what_is_held() {
        let mut order = InOrder::default();
        order.asked(1);
        order.asked(2);
        let mut out = Vec::new();
        order.arrived(2, Some('b'), &mut out);
        assert_eq!((order.held(), out.len()), (1, 0));
        order.arrived(1, Some('a'), &mut out);
        assert_eq!((order.held(), out), (0, vec!['a', 'b']));
    }
}
