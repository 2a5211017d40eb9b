//! d1r2: lossless, streaming backups of Cloudflare D1 (or any SQLite database) to R2, S3 or a
//! local folder, and everything around them. See ARCHITECTURE.md for the map.

pub mod cli;
pub mod error;
pub mod format;
pub mod model;
pub mod ops;
pub mod remote;
pub mod source;
pub mod store;
