//! Reads that survive a broken connection: an object's bytes keep coming after the connection
//! carrying them drops, is cut short or stalls, by asking again for the rest.
//!
//! A store's own retries (the AWS SDK's) cover a request until its answer starts; the body then
//! arrives as a stream that nothing retries, and a part is a few MiB. So a store's [`Store::get`]
//! hands its first answer and a way to open the object again to [`resuming`], which asks for the
//! bytes still wanted (an HTTP `Range: bytes=N-`) of the version already read (`If-Match` on its
//! ETag, so a replaced object is refused rather than spliced onto the old one's start), backing off
//! between attempts with the project's one retry loop ([`crate::remote::retry`]). Only a store's
//! [`StoreError::Interrupted`] is worth resuming; anything else ends the read as it is. What a
//! read that could not be finished reports is a read failure, never a short object: the size and
//! digest checks above are left for bodies that arrived whole.
//!
//! [`Store::get`]: super::Store::get

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;

use super::{ByteStream, StoreError};
use crate::remote::retry::{self, RetryPolicy, Verdict};

/// How hard a broken read is resumed: at most six reopenings of one object in all, the first at
/// once and each later one after a full-jitter backoff, within two minutes of its first break.
/// An object d1r2 reads is at most a 5 MiB part, so a connection that breaks more often than that
/// while carrying one is down, not flaky.
pub(crate) const RESUME_POLICY: RetryPolicy = RetryPolicy {
    max_attempts: 6,
    initial_delay: Duration::from_millis(250),
    max_delay: Duration::from_secs(10),
    deadline: Duration::from_secs(120),
};

/// An object's bytes as one answer brought them.
pub(crate) struct Body {
    pub stream: ByteStream,
    /// The object's version (S3's ETag), which a resumed read asks for.
    pub version: Option<String>,
    /// Where in the object the bytes start: 0 for a whole object, else its `Content-Range` start.
    pub start: u64,
    /// The object's size, when the answer said it.
    pub size: Option<u64>,
}

/// What a resumed read asks for: the object from byte `offset` on, of `version` when known.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Resume {
    pub offset: u64,
    pub version: Option<String>,
}

/// Opens the object again from where a read stopped.
pub(crate) type Reopen =
    Box<dyn Fn(Resume) -> BoxFuture<'static, Result<Body, StoreError>> + Send + Sync>;

/// The object's bytes from `first` on, as one stream that reopens the object through `reopen`
/// (under `policy`) when the connection breaks. `store` and `key` name it in errors.
pub(crate) fn resuming(
    first: Body,
    reopen: Reopen,
    policy: RetryPolicy,
    store: String,
    key: String,
) -> ByteStream {
    let reader = Reader {
        offset: 0,
        version: first.version,
        size: first.size,
        body: first.stream,
        reopen,
        policy,
        attempts: 0,
        first_break: None,
        store,
        key,
    };
    futures::stream::unfold(Some(reader), |reader| async move {
        let mut reader = reader?;
        match reader.next().await {
            Some(Ok(chunk)) => Some((Ok(chunk), Some(reader))),
            Some(Err(e)) => Some((Err(e), None)),
            None => None,
        }
    })
    .boxed()
}

struct Reader {
    /// Bytes of the object handed on so far.
    offset: u64,
    version: Option<String>,
    size: Option<u64>,
    body: ByteStream,
    reopen: Reopen,
    policy: RetryPolicy,
    /// Reopenings so far.
    attempts: u32,
    first_break: Option<Instant>,
    store: String,
    key: String,
}

impl Reader {
    async fn next(&mut self) -> Option<Result<Bytes, StoreError>> {
        loop {
            let broken = match self.body.next().await {
                Some(Ok(chunk)) => {
                    self.offset += chunk.len() as u64;
                    return Some(Ok(chunk));
                }
                Some(Err(e)) if e.is_interrupted() => {
                    // Every byte arrived and only the end was lost: nothing is left to ask for.
                    if self.size.is_some_and(|size| self.offset >= size) {
                        return None;
                    }
                    e
                }
                Some(Err(e)) => return Some(Err(e)),
                None => match ended_early(self.offset, self.size) {
                    Some(message) => self.interrupted(message),
                    None => return None,
                },
            };
            if let Err(e) = self.resume(broken).await {
                return Some(Err(e));
            }
        }
    }

    fn interrupted(&self, message: String) -> StoreError {
        StoreError::Interrupted {
            store: self.store.clone(),
            key: self.key.clone(),
            received: self.offset,
            attempts: 1,
            message,
        }
    }

    /// Reopens the object after `broken`, or says why the read cannot go on.
    async fn resume(&mut self, broken: StoreError) -> Result<(), StoreError> {
        let first_break = *self.first_break.get_or_insert_with(Instant::now);
        let Some(policy) = remaining(&self.policy, self.attempts, first_break.elapsed()) else {
            return Err(self.given_up(broken));
        };
        // A break after progress starts a new round of attempts; past the first, it waits as the
        // attempts so far say, so a connection that keeps breaking is not hammered.
        if self.attempts > 0 {
            let wait = retry::delay(&self.policy, self.attempts, None, rand::random::<f64>());
            tracing::debug!("{broken}; reading again in {wait:?}");
            tokio::time::sleep(wait).await;
        }
        let want = Resume {
            offset: self.offset,
            version: self.version.clone(),
        };
        let (size, reopen, names) = (self.size, &self.reopen, (&*self.store, &*self.key));
        let (result, attempts) = retry::run(
            &policy,
            |_| reopen_with_bytes(reopen, want.clone(), size, names),
            |e: &StoreError| match e.is_interrupted() {
                true => Verdict::Retry { after: None },
                false => Verdict::Fail,
            },
            |e, wait| tracing::debug!("{e}; reading again in {wait:?}"),
        )
        .await;
        self.attempts += attempts;
        match result {
            Ok(body) => {
                self.body = body;
                Ok(())
            }
            Err(e) if e.is_interrupted() => Err(self.given_up(e)),
            Err(e) => Err(e),
        }
    }

    /// The read failure reported once resuming stops: where the object broke off and after how
    /// many attempts, with the last cause.
    fn given_up(&self, last: StoreError) -> StoreError {
        let message = match last {
            StoreError::Interrupted { message, .. } => message,
            other => other.to_string(),
        };
        StoreError::Interrupted {
            store: self.store.clone(),
            key: self.key.clone(),
            received: self.offset,
            attempts: self.attempts + 1,
            message,
        }
    }
}

/// One attempt at the rest of the object: it counts only once a byte of the rest has arrived, so
/// an answer that breaks before any is a failed attempt, not progress. Returns the rest, starting
/// with that byte.
async fn reopen_with_bytes(
    reopen: &Reopen,
    want: Resume,
    size: Option<u64>,
    (store, key): (&str, &str),
) -> Result<ByteStream, StoreError> {
    let (offset, version) = (want.offset, want.version.clone());
    let body = reopen(want).await?;
    // A server that ignored the version asked for still says which it sent, and any says the
    // size: another version or another size is another object.
    if differs(&version, &body.version) || differs(&size, &body.size) {
        return Err(StoreError::Changed {
            store: store.to_string(),
            key: key.to_string(),
        });
    }
    let mut skip = skip_for(offset, body.start).map_err(|message| StoreError::Remote {
        op: "reading again",
        store: store.to_string(),
        key: key.to_string(),
        message,
    })?;
    let mut stream = body.stream;
    loop {
        match stream.next().await {
            Some(Ok(mut chunk)) => {
                let dropped = skip.min(chunk.len() as u64);
                skip -= dropped;
                let rest = chunk.split_off(dropped as usize);
                if !rest.is_empty() {
                    return Ok(futures::stream::once(async { Ok(rest) })
                        .chain(stream)
                        .boxed());
                }
            }
            Some(Err(e)) => return Err(e),
            None => {
                return Err(StoreError::Interrupted {
                    store: store.to_string(),
                    key: key.to_string(),
                    received: offset,
                    attempts: 1,
                    message: "the answer ended before the bytes asked for".to_string(),
                });
            }
        }
    }
}

/// Whether two things both known are not the same.
fn differs<T: PartialEq>(a: &Option<T>, b: &Option<T>) -> bool {
    a.is_some() && b.is_some() && a != b
}

/// The policy left for resuming after `used` attempts and `elapsed` since the first break, or
/// `None` when it is spent.
fn remaining(policy: &RetryPolicy, used: u32, elapsed: Duration) -> Option<RetryPolicy> {
    let max_attempts = policy.max_attempts.checked_sub(used).filter(|&n| n > 0)?;
    let deadline = policy
        .deadline
        .checked_sub(elapsed)
        .filter(|d| !d.is_zero())?;
    Some(RetryPolicy {
        max_attempts,
        deadline,
        ..*policy
    })
}

/// Why a body that ended cleanly is still short: fewer bytes than the object's size said.
fn ended_early(received: u64, size: Option<u64>) -> Option<String> {
    size.filter(|&size| received < size)
        .map(|size| format!("the answer ended after {received} of {size} bytes"))
}

/// How many leading bytes of an answer starting at object byte `start` to drop, when byte
/// `wanted` was asked for: a server that ignores `Range` answers from 0. An answer starting after
/// the byte asked for would leave a gap, and is refused.
fn skip_for(wanted: u64, start: u64) -> Result<u64, String> {
    wanted.checked_sub(start).ok_or_else(|| {
        format!("asked for the bytes from {wanted} on, the answer starts at {start}")
    })
}

/// The first byte and the object's size in a `Content-Range: bytes FIRST-LAST/SIZE` header
/// (RFC 9110 §14.4); `SIZE` may be `*`.
pub(crate) fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let range = value.trim().strip_prefix("bytes ")?;
    let (span, size) = range.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let (first, last) = (
        first.trim().parse::<u64>().ok()?,
        last.trim().parse::<u64>().ok()?,
    );
    if last < first {
        return None;
    }
    let size = match size.trim() {
        "*" => None,
        n => Some(n.parse::<u64>().ok().filter(|&n| n > last)?),
    };
    Some((first, size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn content_ranges_table() {
        for (value, want) in [
            ("bytes 0-99/100", Some((0, Some(100)))),
            ("bytes 42-99/100", Some((42, Some(100)))),
            (" bytes 5-5/*", Some((5, None))),
            ("bytes 5-4/100", None),
            ("bytes 0-99/99", None),
            ("bytes */100", None),
            ("items 0-9/10", None),
            ("bytes 0-x/10", None),
            ("", None),
        ] {
            assert_eq!(parse_content_range(value), want, "{value:?}");
        }
    }

    #[test]
    fn skips_table() {
        for (wanted, start, want) in [
            (0, 0, Ok(0)),
            (100, 100, Ok(0)),
            (100, 0, Ok(100)),
            (100, 40, Ok(60)),
            (100, 101, Err(())),
        ] {
            assert_eq!(
                skip_for(wanted, start).map_err(|_| ()),
                want,
                "{wanted} {start}"
            );
        }
    }

    #[test]
    fn early_ends_table() {
        for (received, size, short) in [
            (0, None, false),
            (10, None, false),
            (10, Some(10), false),
            (9, Some(10), true),
            (0, Some(1), true),
            (11, Some(10), false),
        ] {
            assert_eq!(
                ended_early(received, size).is_some(),
                short,
                "{received} {size:?}"
            );
        }
    }

    #[test]
    fn remaining_policies_table() {
        let policy = RetryPolicy {
            max_attempts: 6,
            deadline: Duration::from_secs(100),
            ..RESUME_POLICY
        };
        for (used, elapsed, want) in [
            (0, 0, Some((6, 100))),
            (2, 30, Some((4, 70))),
            (5, 99, Some((1, 1))),
            (6, 0, None),
            (9, 0, None),
            (0, 100, None),
            (0, 150, None),
        ] {
            let got = remaining(&policy, used, Duration::from_secs(elapsed))
                .map(|p| (p.max_attempts, p.deadline.as_secs()));
            assert_eq!(got, want, "{used} {elapsed}");
        }
    }

    /// A fake object behind a flaky connection: each answer carries the bytes from the offset
    /// asked for, and breaks after the number of bytes its plan says (`None`: never).
    struct Flaky {
        data: Bytes,
        version: &'static str,
        /// Whether a break ends the answer cleanly (short of its size) rather than with an error.
        clean: bool,
        breaks: Mutex<Vec<Option<usize>>>,
        asked: Mutex<Vec<Resume>>,
    }

    fn broken() -> StoreError {
        StoreError::Interrupted {
            store: "s".into(),
            key: "k".into(),
            received: 0,
            attempts: 1,
            message: "connection reset".into(),
        }
    }

    impl Flaky {
        fn new(data: &[u8], version: &'static str, breaks: Vec<Option<usize>>) -> Arc<Flaky> {
            Arc::new(Flaky {
                data: Bytes::copy_from_slice(data),
                version,
                clean: false,
                breaks: Mutex::new(breaks),
                asked: Mutex::new(Vec::new()),
            })
        }

        /// The offsets the reader asked from, in order.
        fn offsets(&self) -> Vec<u64> {
            self.asked
                .lock()
                .unwrap()
                .iter()
                .map(|r| r.offset)
                .collect()
        }

        fn answer(&self, from: Resume) -> Result<Body, StoreError> {
            if from.version.as_deref().is_some_and(|v| v != self.version) {
                return Err(StoreError::Changed {
                    store: "s".into(),
                    key: "k".into(),
                });
            }
            self.asked.lock().unwrap().push(from.clone());
            let brk = {
                let mut breaks = self.breaks.lock().unwrap();
                if breaks.is_empty() {
                    None
                } else {
                    breaks.remove(0)
                }
            };
            let rest = self.data.slice(from.offset as usize..);
            let cut = brk.unwrap_or(rest.len()).min(rest.len());
            // Three-byte chunks, so breaks fall inside and between chunks.
            let mut items: Vec<Result<Bytes, StoreError>> = rest
                .slice(..cut)
                .chunks(3)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            if brk.is_some_and(|b| b <= rest.len()) && !self.clean {
                items.push(Err(broken()));
            }
            Ok(Body {
                stream: futures::stream::iter(items).boxed(),
                version: Some(self.version.to_string()),
                start: from.offset,
                size: Some(self.data.len() as u64),
            })
        }

        async fn read(self: &Arc<Self>) -> Result<Vec<u8>, StoreError> {
            let first = self.answer(Resume {
                offset: 0,
                version: None,
            })?;
            let me = self.clone();
            let reopen: Reopen = Box::new(move |from| {
                let me = me.clone();
                Box::pin(async move { me.answer(from) })
            });
            let policy = RetryPolicy {
                initial_delay: Duration::from_millis(1),
                ..RESUME_POLICY
            };
            let mut stream = resuming(first, reopen, policy, "s".into(), "k".into());
            let mut out = Vec::new();
            while let Some(chunk) = stream.next().await {
                out.extend_from_slice(&chunk?);
            }
            Ok(out)
        }
    }

    #[tokio::test]
    async fn a_broken_read_goes_on_from_where_it_stopped() {
        let data: Vec<u8> = (0..100u8).collect();
        let flaky = Flaky::new(&data, "\"v1\"", vec![Some(10), Some(0), Some(31), None]);
        assert_eq!(flaky.read().await.unwrap(), data);
        let asked = flaky.offsets();
        assert_eq!(asked, [0, 10, 10, 41]);
        let versions = flaky.asked.lock().unwrap()[1..]
            .iter()
            .all(|r| r.version.as_deref() == Some("\"v1\""));
        assert!(versions);
    }

    #[tokio::test]
    async fn a_read_that_keeps_breaking_is_a_read_failure() {
        let data = [7u8; 50];
        // Progress, then six answers in a row with nothing: the seventh is never asked.
        let mut breaks = vec![Some(20)];
        breaks.extend([Some(0); 6]);
        let flaky = Flaky::new(&data, "\"v1\"", breaks);
        let err = flaky.read().await.unwrap_err();
        let StoreError::Interrupted {
            received, attempts, ..
        } = &err
        else {
            panic!("{err}");
        };
        assert_eq!((*received, *attempts), (20, 7), "{err}");
        assert_eq!(flaky.asked.lock().unwrap().len(), 7);
        assert!(!err.to_string().contains("corrupt"), "{err}");
    }

    #[tokio::test]
    async fn a_replaced_object_is_not_spliced_in() {
        let flaky = Flaky::new(&[1u8; 40], "\"v1\"", vec![Some(12)]);
        let changed = Flaky::new(&[2u8; 40], "\"v2\"", vec![]);
        let first = flaky
            .answer(Resume {
                offset: 0,
                version: None,
            })
            .unwrap();
        let reopen: Reopen = Box::new(move |from| {
            let changed = changed.clone();
            Box::pin(async move { changed.answer(from) })
        });
        let mut stream = resuming(first, reopen, RESUME_POLICY, "s".into(), "k".into());
        let mut read = Vec::new();
        let err = loop {
            match stream.next().await {
                Some(Ok(chunk)) => read.extend_from_slice(&chunk),
                Some(Err(e)) => break e,
                None => panic!("read {} bytes of a replaced object", read.len()),
            }
        };
        assert!(matches!(err, StoreError::Changed { .. }), "{err}");
        assert_eq!(read, [1u8; 12]);
    }

    #[tokio::test]
    async fn an_answer_that_ends_short_of_its_size_is_read_on() {
        let data: Vec<u8> = (0..60u8).collect();
        let flaky = Flaky::new(&data, "\"v1\"", vec![Some(25), Some(20), None]);
        let flaky = Arc::new(Flaky {
            clean: true,
            data: flaky.data.clone(),
            version: flaky.version,
            breaks: Mutex::new(flaky.breaks.lock().unwrap().clone()),
            asked: Mutex::new(Vec::new()),
        });
        assert_eq!(flaky.read().await.unwrap(), data);
        let asked = flaky.offsets();
        assert_eq!(asked, [0, 25, 45]);
    }

    /// A server that ignores `If-Match` and sends another version is caught by the version it
    /// says it sent, or by the size.
    #[tokio::test]
    async fn another_version_sent_anyway_is_refused() {
        for (version, len) in [("\"v2\"", 40), ("\"v1\"", 41)] {
            let flaky = Flaky::new(&[1u8; 40], "\"v1\"", vec![Some(12)]);
            let other = Flaky::new(&vec![2u8; len], version, vec![]);
            let first = flaky
                .answer(Resume {
                    offset: 0,
                    version: None,
                })
                .unwrap();
            let reopen: Reopen = Box::new(move |mut from| {
                let other = other.clone();
                from.version = None;
                Box::pin(async move { other.answer(from) })
            });
            let mut stream = resuming(first, reopen, RESUME_POLICY, "s".into(), "k".into());
            let mut read = 0;
            let err = loop {
                match stream.next().await {
                    Some(Ok(chunk)) => read += chunk.len(),
                    Some(Err(e)) => break e,
                    None => panic!("{version} {len}: spliced"),
                }
            };
            assert!(matches!(err, StoreError::Changed { .. }), "{err}");
            assert_eq!(read, 12);
        }
    }

    #[test]
    fn differences_table() {
        for (a, b, want) in [
            (None, None, false),
            (Some(1), None, false),
            (None, Some(1), false),
            (Some(1), Some(1), false),
            (Some(1), Some(2), true),
        ] {
            assert_eq!(differs(&a, &b), want, "{a:?} {b:?}");
        }
    }

    #[tokio::test]
    async fn an_end_after_the_last_byte_is_the_end() {
        let data = [3u8; 9];
        // The connection breaks just after the last byte: nothing is asked again.
        let flaky = Flaky::new(&data, "\"v1\"", vec![Some(9)]);
        assert_eq!(flaky.read().await.unwrap(), data);
        assert_eq!(flaky.asked.lock().unwrap().len(), 1);
    }
}
