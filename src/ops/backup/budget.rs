//! The backup loop's memory budget: every constant that bounds what a backup holds at once, and
//! the bound they make together.
//!
//! A backup holds pages, never a table, so memory follows `concurrency` and the page size, not the
//! database's size. Two places hold pages:
//!
//! - **Readers.** At most `concurrency` readers run at once (a table split by `--table-readers`
//!   counts one slot a reader). A reader holds at most [`PAGES_HELD`] pages, counting every page
//!   asked for and not arrived, arrived and waiting (for its turn, or for one ahead of it still on
//!   its way), and compressing; of those at most [`PAGES_ASKED`] are asked for and at most
//!   [`ENCODERS`] compress. A page that arrives and goes on asks for the rest of its range only
//!   within the same bound, so a window far denser than estimated waits for room like any other
//!   request. Besides its pages a reader holds at most [`MEMBERS_WAITING`] compressed members (one
//!   page's two halves) waiting to be sent, and each compressing half renders [`RENDER_SLICE`] of
//!   SQL at a time.
//! - **First pages.** Tables start from batches of first pages of at most [`MAX_BATCH_TABLES`]
//!   tables. [`READ_AHEAD`] readers wait, taken ahead, each with its first page; beyond them at
//!   most one batch waits to be taken or is on its way, never both.
//!
//! So a backup holds at most [`pages`]`(concurrency)` pages at once. A page is at most twice the
//! source's page size plus one row ([`crate::source::max_page_bytes`]), pages are sized to the
//! page size, and the first pages of a batch are sized to weigh one page together (from the
//! weight of the batch before, so an estimate, while the count is a hard bound): in bytes a
//! backup holds about `concurrency` × ([`PAGES_HELD`] + one page of compressed members) pages
//! plus two of first pages. Beside the pages, each reader fills one part at a time, which a bucket
//! store buffers until it is sent as one `PutObject` (under [`PART_SIZE`], 5 MiB, a store each);
//! a local folder writes it through. The tests count the pages real backups hold against
//! [`pages`].

use crate::store::PART_SIZE;

/// How many pages a reader holds at once, asked for, arrived or being compressed: one
/// compressing while two are asked for, or two compressing while one is. Four held a little
/// more speed on narrow rows, at 10-15 MiB more on wide ones.
pub(crate) const PAGES_HELD: usize = 3;

/// How many pages a reader has asked for and not received at most: two keep the source busy
/// (it answers one while the other waits). Asked four at once, D1 answered them out of order
/// (they travel apart). Two can arrive out of order too: the later one is then held until the
/// one before it arrives, and the next is asked for at once.
pub(crate) const PAGES_ASKED: usize = 2;

/// How many pages of a reader compress at once, each on a blocking thread: compression is most
/// of a backup's own work, and one thread cannot keep up with D1 answering back to back.
pub(crate) const ENCODERS: usize = 2;

/// Compressed members of a reader waiting to be sent at most: one page's two halves. A slow
/// destination holds back compression, and through the pages held, the asking.
pub(crate) const MEMBERS_WAITING: usize = 2;

/// Rendered SQL handed to the encoder at a time, so a page is never held twice.
pub(crate) const RENDER_SLICE: usize = 256 * 1024;

/// Tables whose first pages are read in one batch, at most.
pub(crate) const MAX_BATCH_TABLES: usize = 50;

/// Rows in the first page of a table, before its row size is known.
pub(crate) const FIRST_PAGE_ROWS: usize = 256;

/// The first-page row limit a batch grows to when tables keep filling their first pages.
pub(crate) const MAX_FIRST_PAGE_ROWS: usize = 4096;

/// Readers taken ahead of being started, each with its first page: more than a batch, so the
/// next batch of first pages is asked for as soon as the one before arrives.
pub(crate) const READ_AHEAD: usize = MAX_BATCH_TABLES + 1;

/// What a part stores at most, unless one page's half alone is more: under the 5 MiB at which an
/// S3 upload goes multipart, less room for encryption's tags, so every part is one `PutObject`
/// to R2. A multipart upload costs two requests more (start and completion) and its completion
/// is a round trip the backup waits for after its last page; small parts also make a failed
/// upload cheap to send again, and cost only more objects (a 1 GB database is ~90).
pub(crate) const PART_BYTES: u64 = (PART_SIZE - 64 * 1024) as u64;

/// The most pages a backup of `concurrency` readers holds at once: [`PAGES_HELD`] a reader, the
/// first pages of the readers taken ahead, and one batch of first pages waiting or on its way.
pub(crate) const fn pages(concurrency: usize) -> usize {
    let readers = if concurrency == 0 { 1 } else { concurrency };
    readers * PAGES_HELD + READ_AHEAD + MAX_BATCH_TABLES
}

#[cfg(test)]
mod tests;
