//! Whether a backup is one point in time, and what `--consistent` does when it is not.
//!
//! D1's REST API has no read transaction across requests, so a backup of a database under writes
//! can mix states (an order read before its items were inserted restores as an orphan). D1's
//! Time Travel bookmark moves with every write, so a backup whose bookmark before its first read
//! equals the one after its last read saw no write: it is one moment of the database
//! ([`crate::model::SourceInfo::consistent`]). A SQLite file is read in one read transaction and
//! is one moment by construction.
//!
//! By default a backup that saw writes is kept and marked. With `--consistent` it is discarded
//! (its own keys only, as a failed backup's are) and the backup runs again after a wait with
//! backoff, since a quiet moment usually comes, up to a bound; with `--consistent=prefer` the
//! last attempt is kept, marked, when none was quiet. What to do after each attempt is
//! [`decide`], pure.

use std::time::Duration;

use crate::remote::retry::RetryPolicy;

/// What a backup that saw writes is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Keep it, marked (the default).
    #[default]
    Mark,
    /// Discard it and try again; fail when no attempt was quiet.
    Require,
    /// Discard it and try again; keep the last attempt, marked, when no attempt was quiet.
    Prefer,
}

/// Attempts in all by default, the first included.
pub(crate) const ATTEMPTS: u32 = 4;

/// The waits between attempts: full jitter under a ceiling of 2 s doubling to 30 s (at most
/// 14 s of waiting over the default attempts), no bound in time besides the attempts (a backup
/// of a large database takes what it takes).
pub(crate) fn policy(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts: attempts.max(1),
        initial_delay: Duration::from_secs(2),
        max_delay: Duration::from_secs(30),
        deadline: Duration::from_secs(7 * 24 * 3600),
    }
}

/// What becomes of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Write its manifest: the backup is made.
    Keep,
    /// Delete its parts; another attempt follows while there are attempts left.
    Discard,
}

/// What to do with attempt `attempt` (1-based) of `attempts`, whose consistency is `consistent`
/// (`None`: not known, for want of a bookmark).
pub(crate) fn decide(
    mode: Consistency,
    consistent: Option<bool>,
    attempt: u32,
    attempts: u32,
) -> Decision {
    let last = attempt >= attempts;
    match (mode, consistent) {
        (Consistency::Mark, _) | (_, Some(true)) | (Consistency::Prefer, None) => Decision::Keep,
        (Consistency::Prefer, Some(false)) if last => Decision::Keep,
        (Consistency::Require, _) | (Consistency::Prefer, Some(false)) => Decision::Discard,
    }
}

/// No attempt gave a backup that `--consistent` accepts: nothing was kept.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConsistencyError {
    #[error(
        "no consistent backup: all {attempts} attempts saw writes (the Time Travel bookmark moved while they read), and nothing was kept; back up at a quieter time, allow more --consistent-attempts, or keep the last attempt marked with --consistent=prefer"
    )]
    Writes { attempts: u32 },
    #[error(
        "cannot tell whether the backup saw writes: D1 gave no Time Travel bookmark (the API token needs D1 Read on the account); nothing was kept"
    )]
    NoBookmark,
}

impl crate::error::Classify for ConsistencyError {
    fn kind(&self) -> crate::error::Kind {
        match self {
            ConsistencyError::Writes { .. } | ConsistencyError::NoBookmark => {
                crate::error::Kind::Failed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_table() {
        use Consistency::{Mark, Prefer, Require};
        use Decision::{Discard, Keep};
        for (mode, consistent, attempt, attempts, want) in [
            (Mark, Some(false), 1, 1, Keep),
            (Mark, None, 1, 4, Keep),
            (Mark, Some(true), 1, 4, Keep),
            (Require, Some(true), 1, 4, Keep),
            (Require, Some(false), 1, 4, Discard),
            (Require, Some(false), 3, 4, Discard),
            (Require, Some(false), 4, 4, Discard),
            (Require, Some(true), 4, 4, Keep),
            (Require, None, 1, 4, Discard),
            (Require, Some(false), 1, 1, Discard),
            (Prefer, Some(false), 1, 4, Discard),
            (Prefer, Some(false), 4, 4, Keep),
            (Prefer, Some(true), 2, 4, Keep),
            (Prefer, None, 1, 4, Keep),
        ] {
            assert_eq!(
                decide(mode, consistent, attempt, attempts),
                want,
                "{mode:?} {consistent:?} {attempt}/{attempts}"
            );
        }
    }

    #[test]
    fn waits_grow_and_stay_bounded() {
        let p = policy(ATTEMPTS);
        let waits: Vec<u64> = (1..ATTEMPTS)
            .map(|retry| crate::remote::retry::delay_ceiling(&p, retry).as_secs())
            .collect();
        assert_eq!(waits, [2, 4, 8]);
        assert_eq!(policy(0).max_attempts, 1);
    }
}
