//! Pure: the lockout guards and their verdicts on a plan.
//!
//! Every guard gives a verdict on every plan, so a dry run can show each one: what it measured,
//! and whether it passes, refuses, or is overridden by `--force`. Cloudflare's item limit is the
//! account's and cannot be overridden.

use super::coverage::{Family, Loss, Losses};

/// The limits a change must respect.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Guards {
    pub min_entries: usize,
    pub max_removal_ratio: f64,
    pub max_items: usize,
    pub force: bool,
    /// Whether IPv6 is kept: with `--no-ipv6` the IPv6 ranges go by the user's choice, and the
    /// IPv6 removal is shown but not weighed.
    pub ipv6: bool,
}

/// What a change would do, as the guards weigh it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Plan {
    /// Items the list would hold.
    pub total: usize,
    /// What the list would stop allowing.
    pub losses: Losses,
    /// Items the account's other lists hold, which count against the same limit.
    pub other_items: u64,
}

/// Why a change is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error(
        "refusing to empty the list: GitHub's ranges came back empty (use --force to apply anyway)"
    )]
    Empty,
    #[error(
        "refusing to apply {got} ranges, fewer than --min-entries {min} (use --force to apply anyway)"
    )]
    TooFew { got: usize, min: usize },
    #[error(
        "refusing a change that {}, with --max-removal-ratio {ratio}: --dry-run shows the plan, --force applies it anyway",
        self.summary()
    )]
    Lost {
        family: Family,
        loss: Loss,
        ratio: f64,
    },
    #[error(
        "{wanted} ranges and the {} items of the account's other lists exceed the account's list item limit of {} (--max-items): select fewer --sections, drop IPv6 with --no-ipv6, or free items in the other lists",
        count(u128::from(*others)),
        count(*max as u128)
    )]
    OverLimit {
        wanted: usize,
        others: u64,
        max: usize,
    },
}

impl Refusal {
    /// What the plan does that the guard refuses, in a few words.
    pub(crate) fn summary(&self) -> String {
        match self {
            Refusal::Empty => "empties the list: GitHub's ranges came back empty".to_string(),
            Refusal::TooFew { got, min } => format!("{got} ranges, fewer than {min}"),
            Refusal::Lost {
                family,
                loss,
                ratio,
            } => format!(
                "removes {} of allowed {} {}, above {} ({} of {})",
                percent(loss.share()),
                family.name(),
                family.units(),
                percent(*ratio),
                count(loss.lost),
                count(loss.allowed)
            ),
            Refusal::OverLimit {
                wanted,
                others,
                max,
            } => format!(
                "{} items and the other lists' {} make {}, above the account's limit of {}",
                count(*wanted as u128),
                count(u128::from(*others)),
                count(*wanted as u128 + u128::from(*others)),
                count(*max as u128)
            ),
        }
    }

    /// Whether `--force` overrides it: all but the account's item limit, which Cloudflare
    /// enforces anyway.
    pub(crate) fn overridable(&self) -> bool {
        !matches!(self, Refusal::OverLimit { .. })
    }
}

/// One guard's verdict on a plan.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Verdict {
    /// The guard, as the summary labels it.
    pub guard: String,
    /// What it measured, when it passes.
    pub measured: String,
    /// Why it refuses, if it does.
    pub refusal: Option<Refusal>,
    /// Refused, but overridden by `--force`.
    pub forced: bool,
}

impl Verdict {
    /// `passes: ...`, `would refuse: ...` (a dry run), `refuses: ...` or
    /// `overridden by --force: ...`.
    pub(crate) fn text(&self, dry_run: bool) -> String {
        match &self.refusal {
            None => format!("passes: {}", self.measured),
            Some(r) if self.forced => format!("overridden by --force: {}", r.summary()),
            Some(r) if dry_run => format!("would refuse: {}", r.summary()),
            Some(r) => format!("refuses: {}", r.summary()),
        }
    }

    /// The refusal that stops the change, if any.
    pub(crate) fn blocking(&self) -> Option<&Refusal> {
        self.refusal.as_ref().filter(|_| !self.forced)
    }
}

/// Every guard's verdict on `plan`, the item limit first.
pub(crate) fn check(plan: &Plan, guards: &Guards) -> Vec<Verdict> {
    let verdict = |guard: String, measured: String, refusal: Option<Refusal>| Verdict {
        forced: guards.force && refusal.as_ref().is_some_and(Refusal::overridable),
        guard,
        measured,
        refusal,
    };
    let in_account = plan.total as u128 + u128::from(plan.other_items);
    let mut verdicts = vec![
        verdict(
            "Item limit".to_string(),
            format!(
                "{} items and the other lists' {}, at most {}",
                count(plan.total as u128),
                count(u128::from(plan.other_items)),
                count(guards.max_items as u128)
            ),
            (in_account > guards.max_items as u128).then_some(Refusal::OverLimit {
                wanted: plan.total,
                others: plan.other_items,
                max: guards.max_items,
            }),
        ),
        verdict(
            "Empty set".to_string(),
            format!("{} ranges", plan.total),
            (plan.total == 0).then_some(Refusal::Empty),
        ),
        verdict(
            format!("--min-entries {}", guards.min_entries),
            format!("{} ranges, at least {}", plan.total, guards.min_entries),
            (plan.total > 0 && plan.total < guards.min_entries).then_some(Refusal::TooFew {
                got: plan.total,
                min: guards.min_entries,
            }),
        ),
    ];
    for family in Family::ALL {
        let loss = plan.losses.of(family);
        let weighed = family == Family::V4 || guards.ipv6;
        let removes = format!(
            "removes {} of allowed {} {}",
            percent(loss.share()),
            family.name(),
            family.units()
        );
        let measured = if weighed {
            format!(
                "{removes}, at most {} ({} of {})",
                percent(guards.max_removal_ratio),
                count(loss.lost),
                count(loss.allowed)
            )
        } else {
            format!(
                "{removes} ({} of {}): --no-ipv6 leaves IPv6 out",
                count(loss.lost),
                count(loss.allowed)
            )
        };
        verdicts.push(verdict(
            format!("{} removal", family.name()),
            measured,
            (weighed && loss.share() > guards.max_removal_ratio).then_some(Refusal::Lost {
                family,
                loss,
                ratio: guards.max_removal_ratio,
            }),
        ));
    }
    verdicts
}

/// A share as a percentage: `91 %`, `0.4 %`, `< 0.1 %` for a loss too small to show, never
/// `0 %` or `100 %` for one that is not exactly that.
pub(crate) fn percent(share: f64) -> String {
    let p = share * 100.0;
    if p <= 0.0 {
        return "0 %".to_string();
    }
    if p < 0.05 {
        return "< 0.1 %".to_string();
    }
    let mut text = format!("{p:.1}");
    if p < 100.0 && text == "100.0" {
        text = "99.9".to_string();
    }
    format!("{} %", text.trim_end_matches(".0"))
}

/// A count with thousands separators: `65,793`.
pub(crate) fn count(n: u128) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUARDS: Guards = Guards {
        min_entries: 2,
        max_removal_ratio: 0.5,
        max_items: 10,
        force: false,
        ipv6: true,
    };

    fn plan(total: usize, v4: (u128, u128), v6: (u128, u128), other_items: u64) -> Plan {
        Plan {
            total,
            losses: Losses {
                v4: Loss {
                    lost: v4.0,
                    allowed: v4.1,
                },
                v6: Loss {
                    lost: v6.0,
                    allowed: v6.1,
                },
            },
            other_items,
        }
    }

    /// The guards that refuse, and whether each is overridden.
    fn refused(plan: &Plan, guards: &Guards) -> Vec<(String, bool)> {
        check(plan, guards)
            .into_iter()
            .filter(|v| v.refusal.is_some())
            .map(|v| (v.guard, v.forced))
            .collect()
    }

    #[test]
    fn verdicts_table() {
        let forced = Guards {
            force: true,
            ..GUARDS
        };
        // (plan, guards, the guards that refuse and whether --force overrides each)
        type Case = (Plan, Guards, Vec<(&'static str, bool)>);
        let cases: Vec<Case> = vec![
            // A list of one range GitHub still publishes and two stale ones: 257 of 65,793 addresses lost.
            (plan(3, (257, 65_793), (0, 0), 0), GUARDS, vec![]),
            // Shrunk to a tenth.
            (
                plan(3, (2304, 2560), (0, 0), 0),
                GUARDS,
                vec![("IPv4 removal", false)],
            ),
            (
                plan(3, (0, 2560), (9, 10), 0),
                GUARDS,
                vec![("IPv6 removal", false)],
            ),
            // --no-ipv6: the IPv6 ranges go by choice.
            (
                plan(3, (0, 2560), (10, 10), 0),
                Guards {
                    ipv6: false,
                    ..GUARDS
                },
                vec![],
            ),
            // Exactly the ratio passes; above it refuses.
            (plan(3, (5, 10), (0, 0), 0), GUARDS, vec![]),
            (
                plan(3, (6, 10), (0, 0), 0),
                GUARDS,
                vec![("IPv4 removal", false)],
            ),
            (
                plan(3, (6, 10), (0, 0), 0),
                forced,
                vec![("IPv4 removal", true)],
            ),
            // Empty, not also "fewer than --min-entries".
            (
                plan(0, (10, 10), (0, 0), 0),
                GUARDS,
                vec![("Empty set", false), ("IPv4 removal", false)],
            ),
            (
                plan(0, (0, 0), (0, 0), 0),
                forced,
                vec![("Empty set", true)],
            ),
            (
                plan(1, (0, 0), (0, 0), 0),
                GUARDS,
                vec![("--min-entries 2", false)],
            ),
            // The other lists count against the account's limit, and --force does not help.
            (plan(6, (0, 0), (0, 0), 4), GUARDS, vec![]),
            (
                plan(6, (0, 0), (0, 0), 5),
                forced,
                vec![("Item limit", false)],
            ),
            (
                plan(11, (0, 0), (0, 0), 0),
                GUARDS,
                vec![("Item limit", false)],
            ),
        ];
        for (plan, guards, want) in cases {
            let want: Vec<(String, bool)> = want.iter().map(|(g, f)| (g.to_string(), *f)).collect();
            assert_eq!(refused(&plan, &guards), want, "{plan:?} {guards:?}");
        }
    }

    #[test]
    fn verdicts_read_as_the_readme_says() {
        let verdicts = check(&plan(3, (2304, 2560), (0, 4), 2), &GUARDS);
        let texts: Vec<String> = verdicts.iter().map(|v| v.text(true)).collect();
        assert_eq!(
            texts,
            [
                "passes: 3 items and the other lists' 2, at most 10",
                "passes: 3 ranges",
                "passes: 3 ranges, at least 2",
                "would refuse: removes 90 % of allowed IPv4 addresses, above 50 % (2,304 of 2,560)",
                "passes: removes 0 % of allowed IPv6 /64 networks, at most 50 % (0 of 4)",
            ]
        );
        assert_eq!(
            verdicts[3].blocking().unwrap().to_string(),
            "refusing a change that removes 90 % of allowed IPv4 addresses, above 50 % (2,304 of 2,560), with --max-removal-ratio 0.5: --dry-run shows the plan, --force applies it anyway"
        );
        assert!(verdicts[3].text(false).starts_with("refuses: removes 90 %"));
        let over = check(&plan(9, (0, 0), (0, 0), 9_999), &GUARDS);
        assert_eq!(
            over[0].refusal.as_ref().unwrap().to_string(),
            "9 ranges and the 9,999 items of the account's other lists exceed the account's list item limit of 10 (--max-items): select fewer --sections, drop IPv6 with --no-ipv6, or free items in the other lists"
        );
    }

    #[test]
    fn percents_and_counts() {
        for (share, text) in [
            (0.0, "0 %"),
            (0.000_1, "< 0.1 %"),
            (257.0 / 65_793.0, "0.4 %"),
            (0.5, "50 %"),
            (0.906, "90.6 %"),
            (0.91, "91 %"),
            (0.999_99, "99.9 %"),
            (1.0, "100 %"),
        ] {
            assert_eq!(percent(share), text, "{share}");
        }
        for (n, text) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (65_793, "65,793"),
            (1 << 32, "4,294,967,296"),
        ] {
            assert_eq!(count(n), text);
        }
    }
}
