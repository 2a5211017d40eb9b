//! Freshness: whether a store's newest backup is younger than a bound, so a schedule that
//! stopped (GitHub disables the schedules of quiet public repositories, a runner outage skips a
//! cron, a token expires) is noticed by a job of its own rather than on the day of a restore.
//!
//! A backup's age is counted from its id, the UTC second it started: its data is no older than
//! that, and it is the time `list` shows. The decision is pure ([`judge`]); the store is read
//! once for its ids.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::format::repo::{self, parse_backup_id};
use crate::store::Store;

/// How old the newest backup may be, from `--max-age`: a humane span (`26h`, `90m`, `2d`,
/// `1d 2h`), as `humantime` reads it; zero or unreadable is refused with the flag's name.
pub(crate) fn parse_max_age(text: &str) -> Result<Duration, String> {
    let bad =
        |why: &str| format!("--max-age {text:?}: {why}; expected a span such as 26h, 90m or 2d");
    let age = humantime::parse_duration(text.trim()).map_err(|e| bad(&e.to_string()))?;
    if age.is_zero() {
        return Err(bad("must be longer than zero"));
    }
    Ok(age)
}

/// What a freshness check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// The newest backup is younger than the bound.
    Fresh { id: String, age: Duration },
    /// The newest backup is as old as the bound or older.
    Stale { id: String, age: Duration },
    /// The store holds no backup at all.
    Empty,
}

/// The age of backup `id` at `now`, from the time in its id; zero for an id in the future (a
/// clock ahead of ours). `None` when `id` is not a backup id.
pub(crate) fn age_of(id: &str, now: DateTime<Utc>) -> Option<Duration> {
    let (started, _) = parse_backup_id(id)?;
    Some((now - started.and_utc()).to_std().unwrap_or(Duration::ZERO))
}

/// The verdict on the newest backup (`None`: the store has none), given how old it may be.
pub(crate) fn judge(newest: Option<(&str, Duration)>, max_age: Duration) -> Freshness {
    match newest {
        None => Freshness::Empty,
        Some((id, age)) if age < max_age => Freshness::Fresh {
            id: id.to_string(),
            age,
        },
        Some((id, age)) => Freshness::Stale {
            id: id.to_string(),
            age,
        },
    }
}

/// An age as a person reads it: whole seconds under a minute, then down to the minute
/// (`1day 2h 3m`), never a fraction.
pub(crate) fn human_age(age: Duration) -> String {
    let secs = age.as_secs();
    let shown = if secs < 60 { secs } else { secs - secs % 60 };
    humantime::format_duration(Duration::from_secs(shown)).to_string()
}

/// The freshness of `store`'s newest backup at `now`.
pub(crate) async fn check(
    store: &dyn Store,
    max_age: Duration,
    now: DateTime<Utc>,
) -> Result<Freshness> {
    let ids = repo::backup_ids(store).await?;
    let newest = ids
        .last()
        .map(|id| (id.as_str(), age_of(id, now).unwrap_or(Duration::ZERO)));
    Ok(judge(newest, max_age))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_table() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        for (text, want) in [
            ("26h", Ok(h(26))),
            ("90m", Ok(Duration::from_secs(90 * 60))),
            ("2d", Ok(h(48))),
            (" 1d 2h ", Ok(h(26))),
            ("45s", Ok(Duration::from_secs(45))),
            ("1w", Ok(h(7 * 24))),
            ("0h", Err("must be longer than zero")),
            ("26", Err("time unit needed")),
            ("soon", Err("expected number")),
            ("", Err("value was empty")),
            ("-3h", Err("expected number")),
        ] {
            let got = parse_max_age(text);
            match (&got, want) {
                (Ok(got), Ok(want)) => assert_eq!(*got, want, "{text:?}"),
                (Err(e), Err(part)) => {
                    assert!(e.contains(part), "{text:?}: {e}");
                    assert!(e.starts_with("--max-age "), "{e}");
                }
                _ => panic!("{text:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn ages_table() {
        let now = "2026-11-25T08:00:00Z".parse::<DateTime<Utc>>().unwrap();
        for (id, want) in [
            ("20261125T080000Z", Some(0)),
            ("20261124T221500Z", Some(9 * 3600 + 45 * 60)),
            ("20261124T221500Z-3", Some(9 * 3600 + 45 * 60)),
            ("20261125T090000Z", Some(0)),
            ("latest", None),
        ] {
            assert_eq!(age_of(id, now), want.map(Duration::from_secs), "{id}");
        }
    }

    #[test]
    fn verdicts_table() {
        let max = Duration::from_secs(3600);
        let s = Duration::from_secs;
        for (newest, want) in [
            (None, Freshness::Empty),
            (
                Some(("a", s(3599))),
                Freshness::Fresh {
                    id: "a".into(),
                    age: s(3599),
                },
            ),
            (
                Some(("b", s(3600))),
                Freshness::Stale {
                    id: "b".into(),
                    age: s(3600),
                },
            ),
            (
                Some(("c", s(0))),
                Freshness::Fresh {
                    id: "c".into(),
                    age: s(0),
                },
            ),
        ] {
            assert_eq!(judge(newest, max), want, "{newest:?}");
        }
    }

    #[test]
    fn human_ages_table() {
        for (secs, want) in [
            (0, "0s"),
            (59, "59s"),
            (61, "1m"),
            (26 * 3600 + 125, "1day 2h 2m"),
        ] {
            assert_eq!(human_age(Duration::from_secs(secs)), want, "{secs}");
        }
    }
}
