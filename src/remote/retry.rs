//! The one retry policy every network call shares: exponential backoff with full jitter, bounded
//! in attempts and in total time, honouring a server's `Retry-After`.
//!
//! Full jitter (sleep a random time between zero and the exponential delay) rather than backon's
//! additive jitter, because it spreads many clients retrying after the same outage the most
//! (AWS's "Exponential Backoff and Jitter"). The loop itself is backon's; this module supplies the
//! delays; [`crate::remote::http`] says what a failed HTTP answer means. S3's requests are the
//! exception: the AWS SDK retries them itself (configured in `store::s3`); the bodies of its
//! reads, which nothing in the SDK retries, are resumed through this loop by `store::resume`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use backon::Retryable;

/// How hard to try. The defaults suit API calls: a few quick retries, never more than a few
/// minutes in all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. At least 1.
    pub max_attempts: u32,
    /// The ceiling of the first retry's delay; each later ceiling doubles.
    pub initial_delay: Duration,
    /// No single delay is longer, whatever the doubling or a `Retry-After` says.
    pub max_delay: Duration,
    /// No retry starts after this much time since the first attempt.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            deadline: Duration::from_secs(300),
        }
    }
}

/// What a failed attempt means for the next one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Verdict {
    /// Worth another try; the server may have said how long to wait.
    Retry { after: Option<Duration> },
    /// Trying again cannot help (bad credentials, a missing object, bad SQL).
    Fail,
}

/// The ceiling of the delay before retry number `retry` (1-based): `initial * 2^(retry-1)`,
/// capped at `max`.
pub(crate) fn delay_ceiling(policy: &RetryPolicy, retry: u32) -> Duration {
    let factor = 2u32.saturating_pow(retry.saturating_sub(1).min(30));
    policy
        .initial_delay
        .saturating_mul(factor)
        .min(policy.max_delay)
}

/// The delay to sleep before retry number `retry`: uniform in `[0, ceiling]` (full jitter), or the
/// server's `Retry-After` when it asked for longer, never beyond `max_delay`.
pub(crate) fn delay(
    policy: &RetryPolicy,
    retry: u32,
    retry_after: Option<Duration>,
    unit: f64,
) -> Duration {
    let jittered = delay_ceiling(policy, retry).mul_f64(unit.clamp(0.0, 1.0));
    retry_after
        .map_or(jittered, |after| after.max(jittered))
        .min(policy.max_delay)
}

/// The HTTP statuses worth retrying: request timeout, too many requests, and server errors.
pub(crate) fn is_transient_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status)
}

/// A `Retry-After` header's wait: delay-seconds or an HTTP date (RFC 9110 §10.2.3). A date in the
/// past means no wait; anything unreadable is ignored.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let then = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(date.timestamp()).ok()?);
    Some(then.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Runs `attempt` (given its 1-based number) until it succeeds, `judge` says a failure is final,
/// or the policy runs out. Returns the last result and the number of attempts made.
/// `on_retry` hears of each failure that will be retried, with the delay before the next attempt.
pub(crate) async fn run<T, E, F, Fut>(
    policy: &RetryPolicy,
    mut attempt: F,
    judge: impl Fn(&E) -> Verdict,
    mut on_retry: impl FnMut(&E, Duration),
) -> (Result<T, E>, u32)
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let attempts = AtomicU32::new(0);
    let started = Instant::now();
    let schedule = Schedule {
        policy: *policy,
        retry: 0,
    };
    let result = (|| attempt(attempts.fetch_add(1, Ordering::SeqCst) + 1))
        .retry(schedule)
        .when(|e| matches!(judge(e), Verdict::Retry { .. }))
        .adjust(|e, scheduled| {
            let scheduled = scheduled?;
            let wanted = match judge(e) {
                Verdict::Retry { after: Some(after) } => {
                    // A server asking for longer than we would ever wait: give up now rather
                    // than hammer it early.
                    if after > policy.max_delay {
                        return None;
                    }
                    after.max(scheduled)
                }
                _ => scheduled,
            };
            (started.elapsed() + wanted < policy.deadline).then_some(wanted)
        })
        .notify(|e, wait| on_retry(e, wait))
        .await;
    (result, attempts.load(Ordering::SeqCst))
}

/// The sequence of jittered delays backon sleeps between attempts.
#[derive(Debug)]
struct Schedule {
    policy: RetryPolicy,
    retry: u32,
}

impl Iterator for Schedule {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.retry + 1 >= self.policy.max_attempts.max(1) {
            return None;
        }
        self.retry += 1;
        Some(delay(&self.policy, self.retry, None, rand::random::<f64>()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(20),
            deadline: Duration::from_secs(10),
        }
    }

    #[test]
    fn ceilings_double_and_cap() {
        let p = RetryPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            ..RetryPolicy::default()
        };
        for (retry, ms) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (60, 1000),
        ] {
            assert_eq!(
                delay_ceiling(&p, retry),
                Duration::from_millis(ms),
                "retry {retry}"
            );
        }
    }

    #[test]
    fn delays_are_full_jitter_and_honour_retry_after() {
        let p = RetryPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            ..RetryPolicy::default()
        };
        for (retry, after, unit, want_ms) in [
            (1, None, 0.0, 0),
            (1, None, 1.0, 100),
            (3, None, 0.5, 200),
            (1, Some(2000), 0.5, 2000),
            (3, Some(10), 1.0, 400),
            (1, Some(60_000), 0.0, 5000),
        ] {
            let got = delay(&p, retry, after.map(Duration::from_millis), unit);
            assert_eq!(
                got,
                Duration::from_millis(want_ms),
                "{retry} {after:?} {unit}"
            );
        }
    }

    #[test]
    fn transient_statuses() {
        for (status, transient) in [
            (200, false),
            (400, false),
            (401, false),
            (403, false),
            (404, false),
            (408, true),
            (409, false),
            (429, true),
            (500, true),
            (502, true),
            (503, true),
            (599, true),
        ] {
            assert_eq!(is_transient_status(status), transient, "{status}");
        }
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_470);
        for (value, want) in [
            ("7", Some(7)),
            (" 120 ", Some(120)),
            ("Wed, 21 Oct 2015 07:28:00 GMT", Some(10)),
            ("Wed, 21 Oct 2015 07:00:00 GMT", Some(0)),
            ("soon", None),
            ("-3", None),
        ] {
            assert_eq!(
                parse_retry_after(value, now),
                want.map(Duration::from_secs),
                "{value}"
            );
        }
    }

    #[tokio::test]
    async fn retries_until_success_and_counts_attempts() {
        let mut heard = 0;
        let (result, attempts) = run(
            &policy(5),
            |n| async move { if n < 3 { Err(n) } else { Ok(n) } },
            |_| Verdict::Retry { after: None },
            |_, _| heard += 1,
        )
        .await;
        assert_eq!(result, Ok(3));
        assert_eq!(attempts, 3);
        assert_eq!(heard, 2);
    }

    #[tokio::test]
    async fn final_failures_are_not_retried() {
        let (result, attempts) = run(
            &policy(5),
            |n| async move { Err::<(), _>(n) },
            |_| Verdict::Fail,
            |_, _| {},
        )
        .await;
        assert_eq!(result, Err(1));
        assert_eq!(attempts, 1);
    }

    #[tokio::test]
    async fn attempts_are_bounded() {
        let (result, attempts) = run(
            &policy(4),
            |n| async move { Err::<(), _>(n) },
            |_| Verdict::Retry { after: None },
            |_, _| {},
        )
        .await;
        assert_eq!(result, Err(4));
        assert_eq!(attempts, 4);
    }

    #[tokio::test]
    async fn retry_after_is_waited_and_an_excessive_one_gives_up() {
        let started = Instant::now();
        let (result, attempts) = run(
            &policy(3),
            |n| async move { if n < 2 { Err(n) } else { Ok(n) } },
            |_| Verdict::Retry {
                after: Some(Duration::from_millis(15)),
            },
            |_, _| {},
        )
        .await;
        assert_eq!((result, attempts), (Ok(2), 2));
        assert!(started.elapsed() >= Duration::from_millis(15));

        let (result, attempts) = run(
            &policy(3),
            |n| async move { Err::<(), _>(n) },
            |_| Verdict::Retry {
                after: Some(Duration::from_secs(3600)),
            },
            |_, _| {},
        )
        .await;
        assert_eq!((result, attempts), (Err(1), 1));
    }

    #[tokio::test]
    async fn the_deadline_stops_retries() {
        let p = RetryPolicy {
            deadline: Duration::from_millis(30),
            max_delay: Duration::from_millis(20),
            initial_delay: Duration::from_millis(20),
            max_attempts: 100,
        };
        let (result, attempts) = run(
            &p,
            |n| async move { Err::<(), _>(n) },
            |_| Verdict::Retry {
                after: Some(Duration::from_millis(20)),
            },
            |_, _| {},
        )
        .await;
        assert!(result.is_err());
        assert!(attempts <= 3, "{attempts}");
    }
}
