//! Which backups a retention policy keeps: restic's `forget` semantics, as a pure function.
//!
//! For each bucket kind (hour, day, ISO week, month, year, all in UTC), going from the newest
//! backup to the oldest, the first backup seen in a bucket not seen before is kept, until the
//! rule has kept N; `--keep-last N` keeps the N newest; `--keep-within D` keeps every backup
//! newer than the newest backup's time minus D (relative to the newest backup, as restic does,
//! so a stalled schedule does not age every backup out). A backup kept by any rule stays, and
//! the newest backup is always kept. As in restic 0.17, when a bucket rule still has count left
//! after the oldest backup's bucket, the oldest backup is kept too, so the history reaches as far
//! back as the policy asked for.

use chrono::{DateTime, Datelike, Months, TimeDelta, Timelike, Utc};

/// How many of each to keep. A count of zero turns its rule off, as in restic (an action input
/// of `0` reads as "off"), and a policy with no rule left on is refused, so it can never mean
/// "remove everything but the newest".
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct KeepPolicy {
    pub last: Option<u32>,
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
    pub yearly: Option<u32>,
    pub within: Option<Within>,
}

impl KeepPolicy {
    /// Whether no rule would keep anything: every count unset or zero and no span.
    pub(crate) fn is_empty(&self) -> bool {
        let counts = [
            self.last,
            self.hourly,
            self.daily,
            self.weekly,
            self.monthly,
            self.yearly,
        ];
        counts.iter().all(|n| n.unwrap_or(0) == 0) && self.within.is_none()
    }
}

/// A calendar span, restic's `2y5m7d3h`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Within {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
}

impl std::fmt::Display for Within {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

/// Parses `2y5m7d3h` (any subset, in any order: `30d`, `12h`, `1y6m`).
pub(crate) fn parse_within(text: &str) -> Result<Within, String> {
    let bad = || format!("--keep-within {text:?}: expected a span like 7d, 12h, 1y6m or 2y5m7d3h");
    let mut within = Within::default();
    let mut digits = String::new();
    let mut any = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: u32 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        let slot = match c {
            'y' => &mut within.years,
            'm' => &mut within.months,
            'd' => &mut within.days,
            'h' => &mut within.hours,
            _ => return Err(bad()),
        };
        *slot += n;
        any = true;
    }
    if !digits.is_empty() || !any || within == Within::default() {
        return Err(bad());
    }
    Ok(within)
}

/// What the policy decided for one backup.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decision {
    pub id: String,
    pub created: DateTime<Utc>,
    pub keep: bool,
    /// The rules that keep it, e.g. `daily 2026-11-24`; empty when it is removed.
    pub reasons: Vec<String>,
}

type Bucket = fn(&DateTime<Utc>) -> String;

fn hour(t: &DateTime<Utc>) -> String {
    format!("{} {:02}h", t.format("%Y-%m-%d"), t.hour())
}
fn day(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}
fn week(t: &DateTime<Utc>) -> String {
    let w = t.iso_week();
    format!("{}-W{:02}", w.year(), w.week())
}
fn month(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m").to_string()
}
fn year(t: &DateTime<Utc>) -> String {
    t.year().to_string()
}

/// Why a policy without a rule is refused, and what to give instead.
pub(crate) const NO_RULE: &str = "give at least one --keep-* rule above zero (a zero turns its \
     rule off, and a policy that keeps nothing would remove every backup)";

/// Decides every backup in `backups` (id and creation time, any order); the answer is newest
/// first. `Err` when the policy has no rule.
pub(crate) fn plan(
    backups: &[(String, DateTime<Utc>)],
    policy: &KeepPolicy,
) -> Result<Vec<Decision>, String> {
    if policy.is_empty() {
        return Err(NO_RULE.to_string());
    }
    let mut sorted: Vec<&(String, DateTime<Utc>)> = backups.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    let rules: [(&str, Option<u32>, Bucket); 5] = [
        ("hourly", policy.hourly, hour),
        ("daily", policy.daily, day),
        ("weekly", policy.weekly, week),
        ("monthly", policy.monthly, month),
        ("yearly", policy.yearly, year),
    ];
    let mut left: Vec<u32> = rules.iter().map(|r| r.1.unwrap_or(0)).collect();
    let mut last_bucket: Vec<Option<String>> = vec![None; rules.len()];
    let mut last_left = policy.last.unwrap_or(0);
    let cutoff = match (policy.within, sorted.first()) {
        (Some(w), Some(newest)) => Some(
            newest
                .1
                .checked_sub_months(Months::new(w.years * 12 + w.months))
                .and_then(|t| t.checked_sub_signed(TimeDelta::days(w.days.into())))
                .and_then(|t| t.checked_sub_signed(TimeDelta::hours(w.hours.into())))
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
        ),
        _ => None,
    };
    let last = sorted.len().saturating_sub(1);
    let mut decisions = Vec::with_capacity(sorted.len());
    for (i, (id, created)) in sorted.iter().enumerate() {
        let mut reasons = Vec::new();
        if i == 0 {
            reasons.push("newest".to_string());
        }
        if last_left > 0 {
            last_left -= 1;
            reasons.push("last".to_string());
        }
        for (r, (name, _, bucket)) in rules.iter().enumerate() {
            if left[r] == 0 {
                continue;
            }
            let b = bucket(created);
            if last_bucket[r].as_ref() != Some(&b) {
                left[r] -= 1;
                reasons.push(format!("{name} {b}"));
                last_bucket[r] = Some(b);
            } else if i == last {
                left[r] -= 1;
                reasons.push(format!("{name} {b} (oldest)"));
            }
        }
        if let (Some(cutoff), Some(w)) = (cutoff, policy.within)
            && *created > cutoff
        {
            reasons.push(format!("within {w}"));
        }
        decisions.push(Decision {
            id: id.clone(),
            created: *created,
            keep: !reasons.is_empty(),
            reasons,
        });
    }
    Ok(decisions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    /// Backups at the given times, ids `b0`, `b1`, ... in the order given.
    fn backups(times: &[&str]) -> Vec<(String, DateTime<Utc>)> {
        times
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("b{i}"), t(s)))
            .collect()
    }

    fn kept(times: &[&str], policy: KeepPolicy) -> Vec<String> {
        let mut ids: Vec<String> = plan(&backups(times), &policy)
            .unwrap()
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| d.id)
            .collect();
        ids.sort_by_key(|id| id[1..].parse::<u32>().unwrap());
        ids
    }

    /// Ten backups over eight days: two on some days, none on 01-07, a week boundary after
    /// 01-04 (ISO week 1 of 2026 ends on Sunday the 4th).
    const DAYS: [&str; 10] = [
        "2026-01-01T10:00:00Z",
        "2026-01-01T11:00:00Z",
        "2026-01-02T10:00:00Z",
        "2026-01-03T10:00:00Z",
        "2026-01-03T22:00:00Z",
        "2026-01-04T10:00:00Z",
        "2026-01-05T10:00:00Z",
        "2026-01-05T11:00:00Z",
        "2026-01-06T10:00:00Z",
        "2026-01-08T10:00:00Z",
    ];

    #[test]
    fn rules_table() {
        let cases: Vec<(KeepPolicy, Vec<&str>)> = vec![
            (
                KeepPolicy {
                    last: Some(3),
                    ..Default::default()
                },
                vec!["b7", "b8", "b9"],
            ),
            (
                // The newest of each of the last 3 days that have a backup (07 has none).
                KeepPolicy {
                    daily: Some(3),
                    ..Default::default()
                },
                vec!["b7", "b8", "b9"],
            ),
            (
                KeepPolicy {
                    daily: Some(5),
                    ..Default::default()
                },
                vec!["b4", "b5", "b7", "b8", "b9"],
            ),
            (
                KeepPolicy {
                    daily: Some(100),
                    ..Default::default()
                },
                // Count left at the end: the oldest (b0, same day as b1) is kept too.
                vec!["b0", "b1", "b2", "b4", "b5", "b7", "b8", "b9"],
            ),
            (
                // ISO weeks: 2026-01-01..04 are week 1, 05..08 week 2.
                KeepPolicy {
                    weekly: Some(2),
                    ..Default::default()
                },
                vec!["b5", "b9"],
            ),
            (
                KeepPolicy {
                    monthly: Some(6),
                    ..Default::default()
                },
                vec!["b0", "b9"],
            ),
            (
                // Rules add up: a backup kept by any rule stays.
                KeepPolicy {
                    last: Some(2),
                    weekly: Some(2),
                    ..Default::default()
                },
                vec!["b5", "b8", "b9"],
            ),
            (
                KeepPolicy {
                    hourly: Some(3),
                    ..Default::default()
                },
                vec!["b7", "b8", "b9"],
            ),
            (
                // Relative to the newest backup (01-08 10:00), not to now; b6, exactly 3 days
                // older, is not within.
                KeepPolicy {
                    within: Some(Within {
                        days: 3,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                vec!["b7", "b8", "b9"],
            ),
            (
                KeepPolicy {
                    within: Some(Within {
                        days: 3,
                        hours: 1,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                vec!["b6", "b7", "b8", "b9"],
            ),
            (
                KeepPolicy {
                    within: Some(Within {
                        days: 4,
                        hours: 1,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                vec!["b5", "b6", "b7", "b8", "b9"],
            ),
            (
                // A zero is a rule turned off beside the others.
                KeepPolicy {
                    daily: Some(0),
                    last: Some(2),
                    ..Default::default()
                },
                vec!["b8", "b9"],
            ),
        ];
        for (policy, want) in cases {
            assert_eq!(kept(&DAYS, policy.clone()), want, "{policy:?}");
        }
    }

    #[test]
    fn years_and_the_input_order() {
        let times = [
            "2024-06-01T00:00:00Z",
            "2026-03-01T00:00:00Z",
            "2025-12-31T23:59:59Z",
            "2025-01-01T00:00:00Z",
            "2023-07-07T00:00:00Z",
        ];
        let yearly = KeepPolicy {
            yearly: Some(3),
            ..Default::default()
        };
        assert_eq!(kept(&times, yearly), ["b0", "b1", "b2"]);
        let monthly = KeepPolicy {
            monthly: Some(2),
            ..Default::default()
        };
        assert_eq!(kept(&times, monthly), ["b1", "b2"]);
    }

    #[test]
    fn reasons_are_named() {
        let policy = KeepPolicy {
            last: Some(1),
            daily: Some(2),
            ..Default::default()
        };
        let decisions = plan(&backups(&DAYS), &policy).unwrap();
        assert_eq!(decisions[0].id, "b9");
        assert_eq!(decisions[0].reasons, ["newest", "last", "daily 2026-01-08"]);
        assert_eq!(decisions[1].reasons, ["daily 2026-01-06"]);
        assert!(!decisions[2].keep && decisions[2].reasons.is_empty());
    }

    #[test]
    fn empty_policies_and_empty_stores() {
        assert!(plan(&backups(&DAYS), &KeepPolicy::default()).is_err());
        // Zeros are rules turned off: a policy of only zeros has no rule.
        for zero in 0..6 {
            let mut counts = [None; 6];
            counts[zero] = Some(0);
            let [last, hourly, daily, weekly, monthly, yearly] = counts;
            let policy = KeepPolicy {
                last,
                hourly,
                daily,
                weekly,
                monthly,
                yearly,
                within: None,
            };
            assert!(plan(&backups(&DAYS), &policy).is_err(), "{policy:?}");
        }
        let policy = KeepPolicy {
            last: Some(1),
            ..Default::default()
        };
        assert!(plan(&[], &policy).unwrap().is_empty());
    }

    #[test]
    fn spans_table() {
        let w = |years, months, days, hours| Within {
            years,
            months,
            days,
            hours,
        };
        for (text, want) in [
            ("7d", Some(w(0, 0, 7, 0))),
            ("12h", Some(w(0, 0, 0, 12))),
            ("1y6m", Some(w(1, 6, 0, 0))),
            ("2y5m7d3h", Some(w(2, 5, 7, 3))),
            (" 30d ", Some(w(0, 0, 30, 0))),
            ("", None),
            ("7", None),
            ("d", None),
            ("7w", None),
            ("0d", None),
            ("-1d", None),
        ] {
            assert_eq!(parse_within(text).ok(), want, "{text}");
        }
        assert_eq!(w(2, 5, 7, 3).to_string(), "2y5m7d3h");
    }
}
