//! The backup format: the SQL a dump is made of, how parts are compressed and encrypted, the
//! manifest and its sealed envelope, the repository of backups in a store, and reading parts
//! back into SQLite.

pub mod chunk;
pub mod codec;
pub mod crypto;
pub mod dump;
pub mod envelope;
pub mod erasure;
pub(crate) mod huffman;
pub mod load;
pub mod lock;
pub mod manifest;
pub mod predicate;
pub mod repo;
