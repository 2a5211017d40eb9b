//! A stream that takes items from the stream before it ahead of being asked for them.
//!
//! A backup's tables come from batches of first pages, one request a batch, and are written a few
//! at a time. A lazy stream asks for the next batch only once every table of the one before has
//! been taken, so D1 would idle while the last tables are written and d1r2 would wait a round trip
//! for the next batch. Reading ahead by more than a batch's tables asks for the next batch as soon
//! as the one before has arrived, and the request then runs while the tables before it are
//! written.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{Fuse, Stream, StreamExt};

/// Items of `inner`, in order, with up to `ahead` of them taken before they are asked for. The
/// stream before makes progress each time this one is polled, as a table finishing polls it.
pub(super) struct ReadAhead<S: Stream> {
    inner: Fuse<S>,
    ready: VecDeque<S::Item>,
    ahead: usize,
}

impl<S: Stream + Unpin> ReadAhead<S> {
    pub(super) fn new(inner: S, ahead: usize) -> Self {
        ReadAhead {
            inner: inner.fuse(),
            ready: VecDeque::new(),
            ahead: ahead.max(1),
        }
    }
}

// The items wait in a queue and are never pinned, so only the stream before needs to be Unpin.
impl<S: Stream + Unpin> Unpin for ReadAhead<S> {}

impl<S: Stream + Unpin> Stream for ReadAhead<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.get_mut();
        while this.ready.len() < this.ahead {
            match this.inner.poll_next_unpin(cx) {
                Poll::Ready(Some(item)) => this.ready.push_back(item),
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        match this.ready.pop_front() {
            Some(item) => Poll::Ready(Some(item)),
            None if this.inner.is_done() => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn items_are_taken_ahead_in_order() {
        // (items, ahead, taken from the stream before once the first item is handed out)
        let cases = [(10, 3, 3), (10, 1, 1), (2, 5, 2), (0, 4, 0), (7, 0, 1)];
        for (items, ahead, taken_first) in cases {
            let taken = AtomicUsize::new(0);
            let before = futures::stream::iter(0..items).inspect(|_| {
                taken.fetch_add(1, Ordering::SeqCst);
            });
            let mut stream = ReadAhead::new(before, ahead);
            let first = stream.next().await;
            assert_eq!(
                first,
                (items > 0).then_some(0),
                "{items} items, {ahead} ahead"
            );
            assert_eq!(
                taken.load(Ordering::SeqCst),
                taken_first,
                "{items}, {ahead}"
            );
            let rest: Vec<usize> = stream.collect().await;
            assert_eq!(rest, (1..items).collect::<Vec<_>>(), "{items}, {ahead}");
        }
    }

    #[tokio::test]
    async fn items_after_a_wait_come_in_order() {
        // The stream before is a batch of two, then a batch that is ready only after a wait.
        let (send, receive) = futures::channel::oneshot::channel::<Vec<u8>>();
        let later = futures::stream::once(async { receive.await.unwrap() });
        let batches = futures::stream::iter([vec![1, 2]]).chain(later);
        let mut stream = ReadAhead::new(batches.flat_map(futures::stream::iter).boxed(), 4);
        assert_eq!(stream.next().await, Some(1));
        send.send(vec![3]).unwrap();
        let rest: Vec<u8> = stream.collect().await;
        assert_eq!(rest, vec![2, 3]);
    }
}
