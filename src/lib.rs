//! d1r2: lossless, streaming backups of Cloudflare D1 (or any SQLite database) to R2, S3 or a
//! local folder, and everything around them. See ARCHITECTURE.md for the map.
//!
//! The library is what the `d1r2` binary runs. Its public part is the two seams a new source or
//! store plugs into ([`source::Source`], [`store::Store`]) with the types they share
//! ([`model`]), the backup format ([`format`]: what a tool reading a backup without d1r2 needs),
//! and the operations as functions: [`backup`], [`restore_to_file`], [`verify`], [`export`].
//! The command line, the action, the operations' internals and the remote clients are private.
//!
//! A backup of a SQLite file into a local folder, restored into another file:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use d1r2::source::sqlite::SqliteSource;
//! use d1r2::store::{Store, local::LocalStore};
//!
//! let dir = tempfile::tempdir()?;
//! let db = dir.path().join("app.db");
//! rusqlite::Connection::open(&db)?
//!     .execute_batch("CREATE TABLE t(a); INSERT INTO t VALUES (9007199254740993), (x'00ff');")?;
//!
//! let store: Arc<dyn Store> = Arc::new(LocalStore::create(&dir.path().join("backups"))?);
//! let source = SqliteSource::open(&db)?;
//! let outcome = d1r2::backup(&source, &[store.clone()], &d1r2::BackupOptions::default()).await?;
//! assert_eq!(outcome.manifest.total_rows(), 2);
//!
//! let restored = dir.path().join("restored.db");
//! let selection = d1r2::format::load::Selection::default();
//! d1r2::restore_to_file(store, &outcome.manifest, &selection, None, &restored, false).await?;
//! let big: i64 = rusqlite::Connection::open(&restored)?
//!     .query_row("SELECT a FROM t WHERE typeof(a) = 'integer'", [], |r| r.get(0))?;
//! assert_eq!(big, 9007199254740993);
//! # Ok(())
//! # }
//! ```

#![warn(unreachable_pub)]

mod cli;
mod error;
pub mod format;
pub mod model;
mod ops;
mod redact;
mod remote;
pub mod source;
pub mod store;

pub use cli::process::main;
pub use error::{Classify, Error, Kind};
pub use ops::backup::{BackupOptions, BackupOutcome, Consistency, run as backup};
pub use ops::erasures::ErasureOutcome;
pub use ops::export::{ExportOutcome, export};
pub use ops::restore::{RestoreOutcome, restore_to_file};
pub use ops::verify::{VerifyOutcome, verify};
pub use remote::cloudflare::Api as CloudflareApi;
pub use remote::retry::RetryPolicy;

/// What the `d1r2` binary needs beyond the library: its command-line definition, for the
/// tests that hold `action.yml` to it.
#[doc(hidden)]
pub mod interface {
    pub use crate::cli::action::ACTION_INPUTS;
    pub use crate::cli::args::Cli;
}
