//! d1r2: lossless, streaming backups of Cloudflare D1 (or any SQLite database) to R2, S3 or a
//! local folder, and everything around them. See ARCHITECTURE.md for the map.

pub mod action;
pub mod audit;
pub mod backup;
pub mod checks;
pub mod cli;
pub mod cloudflare;
pub mod codec;
pub mod commands;
pub mod crypto;
pub mod drill;
pub mod dump;
pub mod envelope;
pub mod error;
pub mod export;
pub mod firewall;
pub mod huffman;
pub mod import;
pub mod in_order;
pub mod load;
pub mod location;
pub mod manifest;
pub mod progress;
pub mod prune;
pub mod read_ahead;
pub mod repo;
pub mod report;
pub mod restore;
pub mod retention;
pub mod retry;
pub mod rowid_windows;
pub mod source;
pub mod store;
pub mod totp;
pub mod trigger;
pub mod verify;
