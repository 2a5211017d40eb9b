//! Content-defined chunks of a table's rows, stored once and shared between backups.
//!
//! A chunked backup cuts each table's stream of INSERT statements into chunks at boundaries chosen
//! by the rows themselves: after a row whose keyed hash of its key (the rowid or the primary key,
//! as SQL literals) has enough low zero bits, once the chunk holds [`ChunkSizes::min`] bytes of
//! SQL, and always at [`ChunkSizes::max`]. The bits asked of a row grow as the row is smaller
//! (`floor(log2(target / row bytes))`), so a chunk holds about `target` bytes whatever the rows
//! weigh, and whether a row ends a chunk depends on that row alone: an insert, update or delete
//! changes the chunk holding the row (and, when it adds or removes a boundary, the one beside
//! it); rows appended change the last chunks. The INSERT statements are packed anew in every
//! chunk, so a chunk's SQL depends on its rows alone, never on how the rows were paged.
//!
//! A chunk is named by its address: the SHA-256 of its SQL in a plain backup; HMAC-SHA256 of its
//! SQL under a subkey of the backup's key in an encrypted one, whose boundaries are chosen under
//! another subkey (SipHash-1-3 of each row's key), so neither addresses nor chunk sizes tell anything about the rows without the
//! key. It is stored under [`chunk_key`], once for all the backups that name it.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::format::codec::Compression;
use crate::format::crypto::Key;
use crate::format::dump::insert::{InsertError, InsertWriter};

/// Where chunks are kept, beside the backups' folders.
pub const CHUNKS_PREFIX: &str = "chunks/";

/// The SQL a chunk holds about, by default.
pub const DEFAULT_CHUNK_BYTES: usize = 1 << 20;

/// What the key plain backups choose boundaries under is derived from: fixed, so every plain
/// backup of the same rows cuts them alike; domain-separated from every other hash d1r2 makes.
const PLAIN_BOUNDARY_SEED: &[u8] = b"d1r2 plain chunk boundary v2";

/// How large a chunk's SQL may be: none ends before `min` bytes (except a table's last), none
/// goes past `max` by more than a row, and they come out about `target` on average.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSizes {
    pub min: usize,
    pub target: usize,
    pub max: usize,
}

impl ChunkSizes {
    /// Sizes around `target`: at least a quarter of it, at most four times it.
    pub fn around(target: usize) -> Self {
        let target = target.max(64);
        ChunkSizes {
            min: target / 4,
            target,
            max: target.saturating_mul(4),
        }
    }
}

/// Whether a chunk ends after a row whose key hashed to `hash`, the row's literals weighing
/// `row_bytes` and the chunk's SQL, that row included, `sql_bytes`.
pub fn ends_chunk(hash: u64, row_bytes: usize, sql_bytes: usize, sizes: ChunkSizes) -> bool {
    if sql_bytes >= sizes.max {
        return true;
    }
    if sql_bytes < sizes.min {
        return false;
    }
    let bits = (sizes.target / row_bytes.max(1)).max(1).ilog2().min(63);
    hash & ((1u64 << bits) - 1) == 0
}

/// The keys a backup's chunks are cut and addressed under.
#[derive(Clone)]
pub struct ChunkKeys {
    /// SipHash-1-3's key: a keyed hash made for short inputs, as a row's key is, where HMAC-SHA256
    /// would cost two SHA-256 blocks a row; it is a PRF under its key all the same.
    boundary: [u8; 16],
    /// `None` for a plain backup, whose addresses are plain SHA-256.
    address: Option<Hmac<Sha256>>,
}

impl std::fmt::Debug for ChunkKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkKeys").finish_non_exhaustive()
    }
}

impl ChunkKeys {
    /// A plain backup's keys, or an encrypted one's, derived from its key.
    pub fn new(key: Option<&Key>) -> Self {
        let mac = |k: &[u8]| Hmac::<Sha256>::new_from_slice(k).expect("HMAC takes any key");
        let first_16 = |k: &[u8]| -> [u8; 16] { k[..16].try_into().expect("16 of 32 bytes") };
        match key {
            None => ChunkKeys {
                boundary: first_16(&Sha256::digest(PLAIN_BOUNDARY_SEED)),
                address: None,
            },
            Some(key) => ChunkKeys {
                boundary: first_16(&key.chunk_boundary_key()),
                address: Some(mac(&key.chunk_address_key())),
            },
        }
    }

    /// The keyed hash of a row's key cells, each behind its length so no two keys hash alike.
    pub fn boundary_hash<'a>(&self, key_cells: impl IntoIterator<Item = &'a str>) -> u64 {
        use std::hash::Hasher;
        let mut sip = siphasher::sip::SipHasher13::new_with_key(&self.boundary);
        for cell in key_cells {
            sip.write(&(cell.len() as u64).to_be_bytes());
            sip.write(cell.as_bytes());
        }
        sip.finish()
    }

    /// A hasher of a chunk's SQL into its address.
    pub fn hasher(&self) -> AddressHasher {
        match &self.address {
            None => AddressHasher::Plain(Sha256::new()),
            Some(mac) => AddressHasher::Keyed(Box::new(mac.clone())),
        }
    }

    /// The address of `sql`.
    pub fn address(&self, sql: &[u8]) -> String {
        let mut hasher = self.hasher();
        hasher.update(sql);
        hasher.finish()
    }
}

/// Hashes a chunk's SQL as it streams by, into its address (64 hex characters).
pub enum AddressHasher {
    Plain(Sha256),
    Keyed(Box<Hmac<Sha256>>),
}

impl AddressHasher {
    pub fn update(&mut self, sql: &[u8]) {
        match self {
            AddressHasher::Plain(sha) => sha.update(sql),
            AddressHasher::Keyed(mac) => mac.update(sql),
        }
    }

    pub fn finish(self) -> String {
        match self {
            AddressHasher::Plain(sha) => hex::encode(sha.finalize()),
            AddressHasher::Keyed(mac) => hex::encode(mac.finalize().into_bytes()),
        }
    }
}

/// Whether `s` is an address as d1r2 writes them: 64 lowercase hex characters.
pub fn is_address(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The store key of the chunk at `address`: `chunks/<first two hex>/<address>.sql[.gz]`, the
/// first two characters spreading the chunks over 256 folders.
pub fn chunk_key(address: &str, compression: Compression) -> String {
    format!(
        "{CHUNKS_PREFIX}{}/{address}.{}",
        &address[..2],
        compression.extension()
    )
}

/// Whether `key` (relative to the store's prefix) is a chunk as [`chunk_key`] names them.
pub fn is_chunk_key(key: &str) -> bool {
    let Some(rest) = key.strip_prefix(CHUNKS_PREFIX) else {
        return false;
    };
    let Some((folder, name)) = rest.split_once('/') else {
        return false;
    };
    let address = name
        .strip_suffix(".sql.gz")
        .or_else(|| name.strip_suffix(".sql"));
    address.is_some_and(|a| is_address(a) && a.starts_with(folder) && folder.len() == 2)
}

/// The address of the chunk stored at `key`, when `key` is a chunk as [`chunk_key`] names them.
pub fn chunk_address(key: &str) -> Option<&str> {
    if !is_chunk_key(key) {
        return None;
    }
    let name = key.rsplit('/').next()?;
    name.split('.').next()
}

/// One chunk's SQL, complete statements, and the rows it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkSql {
    pub sql: String,
    pub rows: u64,
}

/// Cuts one reader's rows of a table, in key order, into chunks.
pub struct Chunker {
    keys: ChunkKeys,
    sizes: ChunkSizes,
    writer: InsertWriter,
    /// Which cells of a row are its key.
    key: Vec<usize>,
    sql: String,
    rows: u64,
}

impl Chunker {
    pub(crate) fn new(keys: ChunkKeys, sizes: ChunkSizes, writer: InsertWriter) -> Self {
        let key = writer.key().to_vec();
        Chunker {
            keys,
            sizes,
            writer,
            key,
            sql: String::new(),
            rows: 0,
        }
    }

    /// Adds a row (its cells as SQL literals); gives back the chunk it ended, if it ended one.
    pub(crate) fn push_row(&mut self, row: &[&str]) -> Result<Option<ChunkSql>, InsertError> {
        if self.sql.capacity() == 0 {
            // Sized once for a chunk of about the target: grown from nothing, its SQL would be
            // copied about once more on the way, and every step past the allocator's threshold
            // for mappings of their own faults its pages in anew.
            self.sql.reserve(self.sizes.target + self.sizes.target / 2);
        }
        self.writer.push_row(row, &mut self.sql)?;
        self.rows += 1;
        let hash = if self.key.is_empty() {
            self.keys.boundary_hash(row.iter().copied())
        } else {
            self.keys.boundary_hash(self.key.iter().map(|i| row[*i]))
        };
        let row_bytes = row.iter().map(|c| c.len()).sum::<usize>();
        let sql_bytes = self.sql.len() + self.writer.pending_len();
        if ends_chunk(hash, row_bytes, sql_bytes, self.sizes) {
            return Ok(Some(self.take()));
        }
        Ok(None)
    }

    /// The last chunk: the rows not yet in one, then `tail` (a table's `sqlite_sequence`
    /// value), or `None` when there is neither.
    pub(crate) fn finish(mut self, tail: Option<&str>) -> Option<ChunkSql> {
        self.writer.flush(&mut self.sql);
        if let Some(tail) = tail {
            self.sql.push_str(tail);
        }
        (!self.sql.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> ChunkSql {
        self.writer.flush(&mut self.sql);
        ChunkSql {
            sql: std::mem::take(&mut self.sql),
            rows: std::mem::take(&mut self.rows),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    /// A small deterministic generator, so a failing case can be replayed.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 11
        }
        fn text(&mut self, len: usize) -> String {
            let body: String = (0..len)
                .map(|_| char::from(b'a' + (self.next() % 26) as u8))
                .collect();
            format!("'{body}'")
        }
    }

    type Rows = Vec<(i64, String)>;

    fn rows(seed: u64, n: usize) -> Rows {
        let mut rng = Lcg(seed);
        (0..n)
            .map(|i| {
                let len = 40 + (rng.next() % 40) as usize;
                (10 * (i as i64 + 1), rng.text(len))
            })
            .collect()
    }

    fn chunks(rows: &Rows, key: Option<&Key>, target: usize) -> Vec<(String, u64)> {
        let keys = ChunkKeys::new(key);
        let columns = vec!["id".to_string(), "body".to_string()];
        let writer = InsertWriter::new("t", &columns, vec![0]);
        let mut chunker = Chunker::new(keys.clone(), ChunkSizes::around(target), writer);
        let mut out = Vec::new();
        for (id, body) in rows {
            let id = id.to_string();
            if let Some(c) = chunker.push_row(&[&id, body]).unwrap() {
                out.push(c);
            }
        }
        out.extend(chunker.finish(Some("-- tail\n")));
        out.into_iter()
            .map(|c| (keys.address(c.sql.as_bytes()), c.rows))
            .collect()
    }

    /// The chunks of `after` that are not in `before`, and of `before` that are not in `after`,
    /// once their common first and last chunks are set aside.
    fn changed(before: &[(String, u64)], after: &[(String, u64)]) -> (usize, usize) {
        let head = before.iter().zip(after).take_while(|(a, b)| a == b).count();
        let tail = before[head..]
            .iter()
            .rev()
            .zip(after[head..].iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        (before.len() - head - tail, after.len() - head - tail)
    }

    #[test]
    fn a_change_to_one_row_changes_only_the_chunks_around_it() {
        let key = Key::parse(KEY_HEX).unwrap();
        for (seed, key) in [(1, None), (2, Some(&key)), (3, None), (4, Some(&key))] {
            let base = rows(seed, 3000);
            let before = chunks(&base, key, 4096);
            assert!(before.len() > 20, "{}", before.len());
            assert_eq!(before.iter().map(|c| c.1).sum::<u64>(), 3000);
            for at in [0, 1234, 2999] {
                // Updated in place, at the same size.
                let mut updated = base.clone();
                let mut rng = Lcg(seed + at as u64);
                updated[at].1 = rng.text(updated[at].1.len() - 2);
                let after = chunks(&updated, key, 4096);
                assert_eq!(changed(&before, &after), (1, 1), "update {seed} {at}");
                // Deleted: its chunk goes, merged with the next when the row ended it.
                let mut deleted = base.clone();
                deleted.remove(at);
                let (old, new) = changed(&before, &chunks(&deleted, key, 4096));
                assert!(old <= 2 && new == 1, "delete {seed} {at}: {old} {new}");
                // Inserted between two rows: its chunk changes, split in two when it ends one.
                let mut inserted = base.clone();
                inserted.insert(at + 1, (10 * (at as i64 + 1) + 5, rng.text(50)));
                let (old, new) = changed(&before, &chunks(&inserted, key, 4096));
                assert!(old == 1 && new <= 2, "insert {seed} {at}: {old} {new}");
            }
            // Rows appended: only the last chunk changes, and new ones follow it.
            let mut appended = base.clone();
            let more = rows(seed + 100, 300);
            appended.extend(more.into_iter().map(|(id, body)| (id + 100_000, body)));
            let after = chunks(&appended, key, 4096);
            assert_eq!(before[..before.len() - 1], after[..before.len() - 1]);
        }
    }

    #[test]
    fn chunks_come_out_near_the_target_size() {
        for target in [2048, 8192, 65536] {
            let base = rows(7, 20_000);
            let sizes = ChunkSizes::around(target);
            let keys = ChunkKeys::new(None);
            let columns = vec!["id".to_string(), "body".to_string()];
            let writer = InsertWriter::new("t", &columns, vec![0]);
            let mut chunker = Chunker::new(keys, sizes, writer);
            let mut lens = Vec::new();
            for (id, body) in &base {
                if let Some(c) = chunker.push_row(&[&id.to_string(), body]).unwrap() {
                    lens.push(c.sql.len());
                }
            }
            assert!(lens.iter().all(|l| *l >= sizes.min && *l < sizes.max + 200));
            let mean = lens.iter().sum::<usize>() / lens.len();
            assert!(
                mean > target / 2 && mean < target * 2,
                "{target}: mean {mean}"
            );
        }
    }

    #[test]
    fn boundaries_and_addresses_differ_by_key() {
        let base = rows(9, 3000);
        let key = Key::parse(KEY_HEX).unwrap();
        let other = Key::parse(&"11".repeat(32)).unwrap();
        let plain = chunks(&base, None, 4096);
        let a = chunks(&base, Some(&key), 4096);
        let b = chunks(&base, Some(&other), 4096);
        assert_eq!(a, chunks(&base, Some(&key), 4096));
        let rows_of = |c: &[(String, u64)]| c.iter().map(|c| c.1).collect::<Vec<_>>();
        assert_ne!(rows_of(&plain), rows_of(&a));
        assert_ne!(rows_of(&a), rows_of(&b));
        assert!(
            a.iter()
                .all(|(addr, _)| plain.iter().all(|(p, _)| p != addr))
        );
        // A plain address is the SQL's SHA-256.
        assert_eq!(
            ChunkKeys::new(None).address(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn ends_chunk_table() {
        let sizes = ChunkSizes {
            min: 100,
            target: 1024,
            max: 4096,
        };
        for (hash, row, sql, want) in [
            // Below the minimum nothing ends; at the maximum everything does.
            (0, 10, 99, false),
            (u64::MAX, 10, 4096, true),
            // 1024 / 10 → 6 bits asked.
            (0b100_0000, 10, 500, true),
            (0b10_0000, 10, 500, false),
            // A row as large as the target ends a chunk whenever it may.
            (u64::MAX, 1024, 500, true),
            (u64::MAX, 5000, 500, true),
            (1, 0, 500, false),
        ] {
            assert_eq!(
                ends_chunk(hash, row, sql, sizes),
                want,
                "{hash} {row} {sql}"
            );
        }
    }

    #[test]
    fn chunk_keys_table() {
        let a = "ab".to_string() + &"0".repeat(62);
        assert_eq!(
            chunk_key(&a, Compression::Gzip),
            format!("chunks/ab/{a}.sql.gz")
        );
        assert!(is_chunk_key(&chunk_key(&a, Compression::Gzip)));
        assert_eq!(
            chunk_address(&chunk_key(&a, Compression::None)),
            Some(a.as_str())
        );
        assert_eq!(chunk_address(&format!("chunks/ac/{a}.sql")), None);
        assert!(is_chunk_key(&chunk_key(&a, Compression::None)));
        for key in [
            format!("chunks/ac/{a}.sql.gz"),
            format!("chunks/ab/{a}.gz"),
            format!("chunks/ab/{a}"),
            format!("chunks/{a}.sql"),
            format!("chunks/ab/x/{a}.sql"),
            format!("chunks/AB/{}.sql", a.to_uppercase()),
            format!("x/chunks/ab/{a}.sql"),
            format!("chunks/ab/{}.sql", &a[1..]),
            "chunks/".to_string(),
            "chunks/ab/".to_string(),
        ] {
            assert!(!is_chunk_key(&key), "{key}");
        }
    }
}
