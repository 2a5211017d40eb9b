//! Encryption of backups: AES-256-GCM over fixed-size chunks for parts, so a part of any size is
//! encrypted and decrypted in constant memory and every chunk is authenticated before its
//! plaintext is released; and one AES-256-GCM message for a manifest's sealed section.
//!
//! The format of one encrypted part (all integers big-endian):
//!
//! ```text
//! header  = magic "D1R2ENC\0" (8) | version (1) | chunk_size u32 (4) | nonce_prefix (7)
//! chunk i = AES-256-GCM(part key, nonce_i, aad, plaintext_i) = ciphertext_i | tag_i (16)
//! nonce_i = nonce_prefix (7) | i as u32 (4) | final flag (1: 0x01 for the last chunk, else 0x00)
//! ```
//!
//! Version 2 (format 3 backups) encrypts under a subkey derived from the key by HKDF-SHA256
//! (info `d1r2 part v2`), and its associated data is the header followed by the part's place:
//! `len(id) u32 | id | len(object key) u32 | object key`, so a part moved to another key or
//! another backup fails authentication. Version 1 (format 2 backups, read only) encrypts under
//! the key itself with the header alone as associated data.
//!
//! Every chunk but the last holds exactly `chunk_size` bytes of plaintext; the last holds
//! `0..=chunk_size` and a stream always has one, so a part cut at a chunk boundary is detected.
//! The index in the nonce binds the order, the final flag binds the end, and the header as
//! associated data makes a changed header fail. The 7-byte prefix is random per part: nonces
//! repeat under one key only if two parts draw the same prefix, which among `n` parts happens
//! with probability about `n² / 2^57` (below 2^-17 for a million parts).

use std::fmt;
use std::io::{self, Read, Write};

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use base64::Engine;
use hkdf::Hkdf;
use sha2::{Digest, Sha256};

/// The environment variable the key is read from.
pub const KEY_ENV: &str = "D1R2_ENCRYPTION_KEY";
/// The name a format 3 manifest records for its parts' encryption (version 2 parts).
pub const ALGORITHM: &str = "AES-256-GCM-chunked-v2";
/// The name a format 2 manifest records (version 1 parts).
pub const ALGORITHM_V1: &str = "AES-256-GCM-chunked-v1";
/// The name recorded for a manifest's sealed section.
pub const SEALING: &str = "AES-256-GCM-HKDF-SHA256";

/// The magic every encrypted part starts with.
pub const MAGIC: &[u8; 8] = b"D1R2ENC\0";
/// Part format versions: 1 unbound (format 2 backups), 2 bound to its backup and key.
const VERSION_UNBOUND: u8 = 1;
const VERSION_BOUND: u8 = 2;
/// HKDF-SHA256 `info` of the subkeys: one per use, so no nonce of one can meet the other's.
const PART_CONTEXT: &[u8] = b"d1r2 part v2";
const MANIFEST_CONTEXT: &[u8] = b"d1r2 manifest v1";
/// A chunk's encryption, its address and where a table's rows are cut into chunks: three
/// subkeys more, so the keyed hashes say nothing of the key that encrypts.
const CHUNK_CONTEXT: &[u8] = b"d1r2 chunk v1";
const CHUNK_ADDRESS_CONTEXT: &[u8] = b"d1r2 chunk address v1";
const CHUNK_BOUNDARY_CONTEXT: &[u8] = b"d1r2 chunk boundary v1";
/// An erasure record's sealed request and the keyed digest of its predicate: subkeys of their
/// own, so a sealed manifest can never be read as an erasure record or the other way round.
const ERASURE_CONTEXT: &[u8] = b"d1r2 erasure v1";
const ERASURE_DIGEST_CONTEXT: &[u8] = b"d1r2 erasure digest v1";
const NONCE_LEN: usize = 12;
const PREFIX_LEN: usize = 7;
const HEADER_LEN: usize = MAGIC.len() + 1 + 4 + PREFIX_LEN;
const TAG_LEN: usize = 16;
/// Plaintext per chunk: large enough that the 16-byte tag costs 0.02%, small enough to keep
/// memory flat.
pub const CHUNK_SIZE: usize = 64 * 1024;
/// A header may ask for a larger chunk than we write, but not an absurd one: decryption buffers
/// a whole chunk.
const MAX_CHUNK_SIZE: usize = 16 * 1024 * 1024;

/// Why a key was refused. The messages never contain the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{KEY_ENV} must be 32 bytes written as 64 hex characters or as base64")]
    Format,
}

/// A 256-bit key. Its `Debug` shows only the fingerprint, so it cannot leak through a log line.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.fingerprint())
    }
}

impl Key {
    /// Parses 64 hex characters or standard base64 (padded or not) of exactly 32 bytes;
    /// surrounding whitespace, such as a trailing newline from a secrets file, is ignored.
    pub fn parse(text: &str) -> Result<Key, KeyError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|_| KeyError::Format)?
        } else {
            base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT
                .decode(text)
                .map_err(|_| KeyError::Format)?
        };
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Format)?;
        Ok(Key(bytes))
    }

    /// Identifies the key without revealing it: the first 16 hex characters of
    /// SHA-256("d1r2 key fingerprint" || key). The domain prefix keeps it distinct from any other
    /// hash of the key.
    pub fn fingerprint(&self) -> String {
        let mut sha = Sha256::new();
        sha.update(b"d1r2 key fingerprint");
        sha.update(self.0);
        hex::encode(sha.finalize())[..16].to_string()
    }

    /// The HMAC-SHA256 key an encrypted backup's chunks are addressed under.
    pub fn chunk_address_key(&self) -> [u8; 32] {
        self.subkey(CHUNK_ADDRESS_CONTEXT).0
    }

    /// The HMAC-SHA256 key that chooses where an encrypted backup's tables are cut into chunks.
    pub fn chunk_boundary_key(&self) -> [u8; 32] {
        self.subkey(CHUNK_BOUNDARY_CONTEXT).0
    }

    /// The HMAC-SHA256 key an encrypted store's erasure records digest their predicate with: a
    /// plain SHA-256 of a short predicate (`id = 42`) is guessed by trying them all.
    pub fn erasure_digest_key(&self) -> [u8; 32] {
        self.subkey(ERASURE_DIGEST_CONTEXT).0
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.0.into())
    }

    /// A key for one use: HKDF-SHA256 of this key (no salt: the key is already uniformly random)
    /// with `context` as the info.
    fn subkey(&self, context: &[u8]) -> Key {
        Key(hkdf_sha256(&self.0, context))
    }
}

fn hkdf_sha256(ikm: &[u8], info: &[u8]) -> [u8; 32] {
    let mut okm = [0u8; 32];
    Hkdf::<Sha256>::new(None, ikm)
        .expand(info, &mut okm)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    okm
}

/// What one part is encrypted under: the key and the part's place in its backup (version 2),
/// or, for the parts of format 2 backups, the key alone (version 1).
#[derive(Clone)]
pub struct PartKey {
    cipher: Aes256Gcm,
    /// The place appended to the header as associated data; `None` for a version 1 part.
    place: Option<Vec<u8>>,
}

impl fmt::Debug for PartKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartKey").finish_non_exhaustive()
    }
}

impl PartKey {
    /// The key of the part stored under `object_key` (relative to the backup's folder) in backup
    /// `id`.
    pub fn bound(key: &Key, id: &str, object_key: &str) -> Self {
        PartKey {
            cipher: key.subkey(PART_CONTEXT).cipher(),
            place: Some(place(id, object_key)),
        }
    }

    /// The key of the chunk stored at `address`: bound to its address, not to a backup, so every
    /// backup that names the chunk reads the one stored object.
    pub fn chunk(key: &Key, address: &str) -> Self {
        PartKey {
            cipher: key.subkey(CHUNK_CONTEXT).cipher(),
            place: Some(place("chunk", address)),
        }
    }

    /// The key of a part of a format 2 backup, bound to nothing but its own header.
    pub fn unbound(key: &Key) -> Self {
        PartKey {
            cipher: key.cipher(),
            place: None,
        }
    }

    fn version(&self) -> u8 {
        if self.place.is_some() {
            VERSION_BOUND
        } else {
            VERSION_UNBOUND
        }
    }

    fn aad(&self, header: &[u8; HEADER_LEN]) -> Vec<u8> {
        [&header[..], self.place.as_deref().unwrap_or_default()].concat()
    }
}

/// A part's place as associated data: each string behind its length, so no two places encode
/// alike.
fn place(id: &str, object_key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + id.len() + object_key.len());
    for text in [id, object_key] {
        let len = u32::try_from(text.len()).expect("an id or key is shorter than 4 GiB");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    out
}

/// Why a sealed message did not open. Neither says more, by design: a wrong key and a changed
/// byte look alike.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("it is too short to be sealed")]
    Short,
    #[error("it fails authentication")]
    Unauthentic,
}

/// Encrypts and authenticates one message (a manifest's private fields) under the manifest
/// subkey: `nonce (12, random) | ciphertext | tag (16)`.
pub fn seal(key: &Key, plaintext: &[u8]) -> Vec<u8> {
    seal_in(key, MANIFEST_CONTEXT, plaintext)
}

/// [`seal`] for an erasure record's request, under the erasure subkey.
pub fn seal_erasure(key: &Key, plaintext: &[u8]) -> Vec<u8> {
    seal_in(key, ERASURE_CONTEXT, plaintext)
}

/// Opens what [`seal_erasure`] made.
pub fn open_erasure(key: &Key, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    open_in(key, ERASURE_CONTEXT, sealed)
}

fn seal_in(key: &Key, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::fill(&mut nonce[..]);
    seal_with_nonce(key, context, nonce, plaintext)
}

fn seal_with_nonce(key: &Key, context: &[u8], nonce: [u8; NONCE_LEN], plaintext: &[u8]) -> Vec<u8> {
    let mut body = plaintext.to_vec();
    let tag = key
        .subkey(context)
        .cipher()
        .encrypt_inout_detached(&nonce.into(), b"", body.as_mut_slice().into())
        .expect("a manifest is far below AES-GCM's message limit");
    [&nonce[..], &body, &tag].concat()
}

/// Opens what [`seal`] made, or says it is not authentic.
pub fn open(key: &Key, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    open_in(key, MANIFEST_CONTEXT, sealed)
}

fn open_in(key: &Key, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(SealError::Short);
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("12 bytes");
    let mut body = body.to_vec();
    key.subkey(context)
        .cipher()
        .decrypt_inout_detached(
            &nonce.into(),
            b"",
            body.as_mut_slice().into(),
            &Tag::try_from(tag).expect("16 bytes"),
        )
        .map_err(|_| SealError::Unauthentic)?;
    Ok(body)
}

fn header(version: u8, chunk_size: u32, prefix: &[u8; PREFIX_LEN]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8] = version;
    h[9..13].copy_from_slice(&chunk_size.to_be_bytes());
    h[13..].copy_from_slice(prefix);
    h
}

fn nonce(prefix: &[u8; PREFIX_LEN], index: u32, last: bool) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut n = [0u8; 12];
    n[..PREFIX_LEN].copy_from_slice(prefix);
    n[PREFIX_LEN..11].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    n.into()
}

fn too_many_chunks() -> io::Error {
    io::Error::other("part too large to encrypt: more than 2^32 chunks")
}

/// Encrypts what is written into `inner`, one chunk at a time.
pub struct EncryptWriter<W> {
    inner: W,
    cipher: Aes256Gcm,
    /// The header followed by the part's place.
    aad: Vec<u8>,
    prefix: [u8; PREFIX_LEN],
    chunk_size: usize,
    index: u32,
    /// Plaintext of the chunk being filled; emitted only once more data arrives, so the last
    /// chunk can be marked final even when it is full.
    buf: Vec<u8>,
}

impl<W: Write> EncryptWriter<W> {
    /// Starts a part with a fresh random nonce prefix.
    pub fn new(inner: W, key: &PartKey) -> io::Result<Self> {
        let mut prefix = [0u8; PREFIX_LEN];
        rand::fill(&mut prefix[..]);
        Self::with_prefix(inner, key, prefix, CHUNK_SIZE)
    }

    /// A writer with a chosen nonce prefix and chunk size: for known-answer tests only, since a
    /// reused prefix reuses nonces.
    fn with_prefix(
        mut inner: W,
        key: &PartKey,
        prefix: [u8; PREFIX_LEN],
        chunk_size: usize,
    ) -> io::Result<Self> {
        let size = u32::try_from(chunk_size).expect("chunk size fits in u32");
        let header = header(key.version(), size, &prefix);
        inner.write_all(&header)?;
        Ok(EncryptWriter {
            inner,
            cipher: key.cipher.clone(),
            aad: key.aad(&header),
            prefix,
            chunk_size,
            index: 0,
            buf: Vec::with_capacity(chunk_size + TAG_LEN),
        })
    }

    fn emit(&mut self, last: bool) -> io::Result<()> {
        let nonce = nonce(&self.prefix, self.index, last);
        let tag = self
            .cipher
            .encrypt_inout_detached(&nonce, &self.aad, self.buf.as_mut_slice().into())
            .map_err(|_| io::Error::other("encryption failed"))?;
        self.inner.write_all(&self.buf)?;
        self.inner.write_all(&tag)?;
        self.buf.clear();
        if !last {
            self.index = self.index.checked_add(1).ok_or_else(too_many_chunks)?;
        }
        Ok(())
    }

    /// Writes the final chunk and returns the inner writer.
    pub fn finish_inner(mut self) -> io::Result<W> {
        self.emit(true)?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for EncryptWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        if self.buf.len() == self.chunk_size {
            self.emit(false)?;
        }
        let n = data.len().min(self.chunk_size - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    /// Flushes what is already encrypted; the pending chunk stays buffered because a chunk is
    /// only written whole.
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn corrupted() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "wrong key or corrupted part")
}

fn truncated() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "encrypted part is truncated: it ends without its final chunk",
    )
}

/// Reads as much as `inner` has, up to `buf.len()`; fewer bytes only at the end of the stream.
fn read_full(inner: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match inner.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Decrypts a part written by [`EncryptWriter`], releasing each chunk's plaintext only after its
/// tag checked out. Errors are `io::Error`s whose message says what is wrong.
pub struct DecryptReader<R> {
    inner: R,
    key: PartKey,
    /// Read lazily, so constructing the reader does no I/O.
    state: Option<Stream>,
    done: bool,
    /// Decrypted plaintext of the current chunk, and how much of it was handed out.
    plain: Vec<u8>,
    pos: usize,
}

struct Stream {
    aad: Vec<u8>,
    prefix: [u8; PREFIX_LEN],
    record: usize,
    index: u32,
    /// The first byte of the next record, read to learn whether the current one is the last.
    peeked: Option<u8>,
}

impl<R: Read> DecryptReader<R> {
    pub fn new(inner: R, key: &PartKey) -> Self {
        DecryptReader {
            inner,
            key: key.clone(),
            state: None,
            done: false,
            plain: Vec::new(),
            pos: 0,
        }
    }

    fn start(&mut self) -> io::Result<Stream> {
        let mut header = [0u8; HEADER_LEN];
        let n = read_full(&mut self.inner, &mut header)?;
        if n < MAGIC.len() || &header[..MAGIC.len()] != MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not an encrypted d1r2 part (bad magic)",
            ));
        }
        if n < HEADER_LEN {
            return Err(truncated());
        }
        let expected = self.key.version();
        if header[8] != expected {
            let reason = match header[8] {
                VERSION_UNBOUND | VERSION_BOUND => format!(
                    "encryption format version {} where this backup's format has version {expected}: the part is not this backup's",
                    header[8]
                ),
                other => format!("unsupported encryption format version {other}"),
            };
            return Err(io::Error::new(io::ErrorKind::InvalidData, reason));
        }
        let chunk = u32::from_be_bytes(header[9..13].try_into().expect("4 bytes")) as usize;
        if chunk == 0 || chunk > MAX_CHUNK_SIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("invalid chunk size {chunk} in the encryption header"),
            ));
        }
        Ok(Stream {
            aad: self.key.aad(&header),
            prefix: header[13..].try_into().expect("7 bytes"),
            record: chunk + TAG_LEN,
            index: 0,
            peeked: None,
        })
    }

    /// Reads, authenticates and decrypts the next chunk into `plain`.
    fn next_chunk(&mut self) -> io::Result<()> {
        let mut s = match self.state.take() {
            Some(s) => s,
            None => self.start()?,
        };
        let mut record = vec![0u8; s.record];
        let mut filled = 0;
        if let Some(b) = s.peeked.take() {
            record[0] = b;
            filled = 1;
        }
        filled += read_full(&mut self.inner, &mut record[filled..])?;
        record.truncate(filled);
        // A full record may or may not be the last: one more byte tells.
        let last = if filled == s.record {
            let mut one = [0u8; 1];
            if read_full(&mut self.inner, &mut one)? == 1 {
                s.peeked = Some(one[0]);
                false
            } else {
                true
            }
        } else {
            true
        };
        if filled < TAG_LEN {
            return Err(truncated());
        }
        let body = filled - TAG_LEN;
        let tag = Tag::try_from(&record[body..]).expect("16 bytes");
        let mut text = record[..body].to_vec();
        let cipher = &self.key.cipher;
        let opened = cipher.decrypt_inout_detached(
            &nonce(&s.prefix, s.index, last),
            &s.aad,
            text.as_mut_slice().into(),
            &tag,
        );
        if opened.is_err() {
            // A whole record that opens with the other final flag tells what happened: read as
            // the last it was a middle chunk (the end was cut off), read as a middle one it was
            // the final chunk (something follows it).
            let mut again = record[..body].to_vec();
            let other = filled == s.record
                && cipher
                    .decrypt_inout_detached(
                        &nonce(&s.prefix, s.index, !last),
                        &s.aad,
                        again.as_mut_slice().into(),
                        &tag,
                    )
                    .is_ok();
            return Err(match (other, last) {
                (true, true) => truncated(),
                (true, false) => io::Error::new(
                    io::ErrorKind::InvalidData,
                    "trailing data after the final chunk of an encrypted part",
                ),
                (false, _) => corrupted(),
            });
        }
        if last {
            self.done = true;
        } else {
            s.index = s.index.checked_add(1).ok_or_else(too_many_chunks)?;
        }
        self.state = Some(s);
        self.plain = text;
        self.pos = 0;
        Ok(())
    }
}

impl<R: Read> Read for DecryptReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.plain.len() {
            if self.done {
                return Ok(0);
            }
            self.next_chunk()?;
        }
        let n = out.len().min(self.plain.len() - self.pos);
        out[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: usize = 64;

    const ID: &str = "20261124T221500Z";
    const OBJECT: &str = "data/0003.sql.gz";

    /// A version 2 part key of a fixed place.
    fn key(byte: u8) -> PartKey {
        PartKey::bound(&Key([byte; 32]), ID, OBJECT)
    }

    fn encrypt(key: &PartKey, prefix: [u8; PREFIX_LEN], chunk: usize, data: &[u8]) -> Vec<u8> {
        let mut w = EncryptWriter::with_prefix(Vec::new(), key, prefix, chunk).unwrap();
        // Odd-sized writes, so chunking does not depend on the caller's write sizes.
        for piece in data.chunks(7) {
            w.write_all(piece).unwrap();
        }
        w.finish_inner().unwrap()
    }

    fn decrypt(key: &PartKey, stored: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        DecryptReader::new(stored, key).read_to_end(&mut out)?;
        Ok(out)
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn round_trips_every_size_around_the_chunk() {
        let k = key(7);
        for (k, chunk) in [
            (&k, SMALL),
            (&k, CHUNK_SIZE),
            (&PartKey::unbound(&Key([7; 32])), SMALL),
        ] {
            for len in [0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk + 5] {
                let plain = data(len);
                let stored = encrypt(k, [9; PREFIX_LEN], chunk, &plain);
                let chunks = len / chunk + 1;
                assert_eq!(
                    stored.len(),
                    HEADER_LEN + len + chunks.max(1) * TAG_LEN - {
                        // A full last chunk is final itself: no empty chunk follows it.
                        if len > 0 && len % chunk == 0 {
                            TAG_LEN
                        } else {
                            0
                        }
                    }
                );
                assert_eq!(decrypt(k, &stored).unwrap(), plain, "len {len}");
            }
        }
        let mut w = EncryptWriter::new(Vec::new(), &k).unwrap();
        w.write_all(&data(1000)).unwrap();
        let stored = w.finish_inner().unwrap();
        assert_eq!(decrypt(&k, &stored).unwrap(), data(1000));
    }

    #[test]
    fn tampering_fails() {
        let k = key(7);
        let plain = data(3 * SMALL + 5);
        let good = encrypt(&k, [1; PREFIX_LEN], SMALL, &plain);
        let record = SMALL + TAG_LEN;
        let chunk_at = |i: usize| HEADER_LEN + i * record;
        let flip = |at: usize| {
            let mut b = good.clone();
            b[at] ^= 1;
            b
        };
        let swapped = {
            let mut b = good.clone();
            let (first, second) = (chunk_at(0), chunk_at(1));
            let one = good[first..second].to_vec();
            b[first..second].copy_from_slice(&good[second..second + record]);
            b[second..second + record].copy_from_slice(&one);
            b
        };
        let other = encrypt(&k, [2; PREFIX_LEN], SMALL, &plain);
        let full = encrypt(&k, [3; PREFIX_LEN], SMALL, &data(2 * SMALL));
        let spliced = [&good[..chunk_at(1)], &other[chunk_at(1)..]].concat();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("magic", flip(0), "bad magic"),
            ("version", flip(8), "version"),
            ("chunk size", flip(12), "wrong key or corrupted part"),
            ("nonce prefix", flip(14), "wrong key or corrupted part"),
            (
                "ciphertext",
                flip(chunk_at(1) + 3),
                "wrong key or corrupted part",
            ),
            ("tag", flip(chunk_at(1) - 1), "wrong key or corrupted part"),
            (
                "last tag",
                flip(good.len() - 1),
                "wrong key or corrupted part",
            ),
            (
                "cut at a chunk boundary",
                good[..chunk_at(2)].to_vec(),
                "truncated",
            ),
            (
                "final chunk dropped",
                good[..chunk_at(3)].to_vec(),
                "truncated",
            ),
            (
                "cut inside a tag",
                good[..chunk_at(1) + 5].to_vec(),
                "truncated",
            ),
            (
                "cut inside a chunk",
                good[..chunk_at(1) + 20].to_vec(),
                "wrong key or corrupted part",
            ),
            ("header only", good[..HEADER_LEN].to_vec(), "truncated"),
            ("cut inside the header", good[..10].to_vec(), "truncated"),
            ("chunks swapped", swapped, "wrong key or corrupted part"),
            (
                "data appended",
                [&good[..], b"x"].concat(),
                "wrong key or corrupted part",
            ),
            (
                "chunk from another part",
                spliced,
                "wrong key or corrupted part",
            ),
            (
                "data after a full final chunk",
                [&full[..], b"x"].concat(),
                "trailing data",
            ),
            (
                "chunk after a full final chunk",
                [&full[..], &full[HEADER_LEN..]].concat(),
                "trailing data",
            ),
        ];
        for (name, bad, expected) in cases {
            let err = decrypt(&k, &bad).expect_err(name);
            assert!(err.to_string().contains(expected), "{name}: {err}");
        }
        let err = decrypt(&key(8), &good).unwrap_err();
        assert_eq!(err.to_string(), "wrong key or corrupted part");
    }

    #[test]
    fn a_part_opens_only_in_its_place() {
        let k = Key([7; 32]);
        let good = encrypt(&key(7), [4; PREFIX_LEN], SMALL, &data(3 * SMALL));
        assert_eq!(decrypt(&key(7), &good).unwrap(), data(3 * SMALL));
        for (name, reader, expected) in [
            (
                "another key in the backup",
                PartKey::bound(&k, ID, "data/0004.sql.gz"),
                "wrong key or corrupted part",
            ),
            (
                "another backup",
                PartKey::bound(&k, "20261124T221501Z", OBJECT),
                "wrong key or corrupted part",
            ),
            (
                "a place whose fields split differently",
                PartKey::bound(&k, "20261124T221500Zdata/", "0003.sql.gz"),
                "wrong key or corrupted part",
            ),
            (
                "read as a format 2 part",
                PartKey::unbound(&k),
                "not this backup's",
            ),
        ] {
            let err = decrypt(&reader, &good).expect_err(name);
            assert!(err.to_string().contains(expected), "{name}: {err}");
        }
        let unbound = encrypt(&PartKey::unbound(&k), [4; PREFIX_LEN], SMALL, b"x");
        let err = decrypt(&key(7), &unbound).unwrap_err().to_string();
        assert!(err.contains("version 1 where"), "{err}");
    }

    #[test]
    fn known_answers() {
        let k = Key(core::array::from_fn(|i| i as u8));
        let sql = b"INSERT INTO t VALUES(1);\n";
        // Version 1, as format 2 backups stored it: it still decrypts.
        let v1 = hex::decode("44315232454e43000100000010a5a5a5a5a5a5a51b2879908ced6d9b7274332f80dd064f0d647084a4d4fbcd358588afa4ae0f28edbbd65e2133c0315a1be8d1bace3bd0d1b4a9be64db8a2d04").unwrap();
        assert_eq!(decrypt(&PartKey::unbound(&k), &v1).unwrap(), sql);
        let v2 = encrypt(&PartKey::bound(&k, ID, OBJECT), [0xA5; PREFIX_LEN], 16, sql);
        assert_eq!(hex::encode(&v2), V2_ANSWER);
        assert_eq!(k.fingerprint(), "4df53752466eea1c");
        let sealed = seal_with_nonce(&k, MANIFEST_CONTEXT, [0x5A; NONCE_LEN], b"{}");
        assert_eq!(hex::encode(&sealed), SEALED_ANSWER);
    }

    /// Computed independently with Python's `cryptography` (HKDF, AESGCM) from the format in the
    /// module docs.
    const V2_ANSWER: &str = "44315232454e43000200000010a5a5a5a5a5a5a547a341e029785e7955f48c9a0f94eef1256c76f8fbfc4cc71e9c680d9224547a542aa78e7d8319cd182a1f759a7ed0cc9edbe2d31c32fd9cbf";
    const SEALED_ANSWER: &str = "5a5a5a5a5a5a5a5a5a5a5a5aa42088104bfffd83dc36b04060ae79b8d399";

    #[test]
    fn hkdf_matches_rfc_5869() {
        // RFC 5869 test case 3 (no salt, no info): the first 32 bytes of its OKM.
        assert_eq!(
            hex::encode(hkdf_sha256(&[0x0b; 22], b"")),
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
        );
        let k = Key([1; 32]);
        assert_ne!(k.subkey(PART_CONTEXT).0, k.subkey(MANIFEST_CONTEXT).0);
        assert_ne!(k.subkey(PART_CONTEXT).0, k.0);
    }

    #[test]
    fn sealed_messages_open_only_untouched_and_with_their_key() {
        let k = Key([3; 32]);
        let sealed = seal(&k, b"the private fields");
        assert_eq!(open(&k, &sealed).unwrap(), b"the private fields");
        assert_ne!(seal(&k, b"x")[..NONCE_LEN], seal(&k, b"x")[..NONCE_LEN]);
        for at in [0, NONCE_LEN, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[at] ^= 1;
            assert!(
                matches!(open(&k, &bad), Err(SealError::Unauthentic)),
                "{at}"
            );
        }
        assert!(matches!(
            open(&Key([4; 32]), &sealed),
            Err(SealError::Unauthentic)
        ));
        assert!(matches!(
            open(&k, &sealed[..sealed.len() - 1]),
            Err(SealError::Unauthentic)
        ));
        assert!(matches!(open(&k, &sealed[..27]), Err(SealError::Short)));
        // A part's subkey never opens a manifest: each use has its own.
        let mut as_part = b"{}".to_vec();
        let tag = k
            .subkey(PART_CONTEXT)
            .cipher()
            .encrypt_inout_detached(&[0; NONCE_LEN].into(), b"", as_part.as_mut_slice().into())
            .unwrap();
        let forged = [&[0; NONCE_LEN][..], &as_part, &tag].concat();
        assert!(matches!(open(&k, &forged), Err(SealError::Unauthentic)));
    }

    #[test]
    fn keys_parse_from_hex_or_base64_only_at_32_bytes() {
        let raw: [u8; 32] = core::array::from_fn(|i| i as u8 * 3);
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        for text in [
            hex::encode(raw),
            hex::encode_upper(raw),
            b64.clone(),
            b64.trim_end_matches('=').to_string(),
            format!("{b64}\n"),
        ] {
            assert_eq!(Key::parse(&text).unwrap().0, raw, "{text}");
        }
        let secret = "c2VjcmV0LXNob3J0LWtleQ==";
        for text in [
            "",
            "abcd",
            secret,
            &hex::encode([1u8; 31]),
            &hex::encode([1u8; 33]),
        ] {
            let err = Key::parse(text).unwrap_err().to_string();
            assert!(err.contains(KEY_ENV), "{err}");
            assert!(text.is_empty() || !err.contains(text), "{err}");
        }
        assert!(!format!("{:?}", Key(raw)).contains(&hex::encode(raw)));
    }
}
