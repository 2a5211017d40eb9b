//! Encryption of backup parts: AES-256-GCM over fixed-size chunks, so a part of any size is
//! encrypted and decrypted in constant memory, and every chunk is authenticated before its
//! plaintext is released.
//!
//! The format of one encrypted part (all integers big-endian):
//!
//! ```text
//! header  = magic "D1R2ENC\0" (8) | version 0x01 (1) | chunk_size u32 (4) | nonce_prefix (7)
//! chunk i = AES-256-GCM(key, nonce_i, aad = header, plaintext_i) = ciphertext_i | tag_i (16)
//! nonce_i = nonce_prefix (7) | i as u32 (4) | final flag (1: 0x01 for the last chunk, else 0x00)
//! ```
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
use sha2::{Digest, Sha256};

/// The environment variable the key is read from.
pub const KEY_ENV: &str = "D1R2_ENCRYPTION_KEY";
/// The name recorded in the manifest for this format.
pub const ALGORITHM: &str = "AES-256-GCM-chunked-v1";

const MAGIC: &[u8; 8] = b"D1R2ENC\0";
const VERSION: u8 = 1;
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

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.0.into())
    }
}

fn header(chunk_size: u32, prefix: &[u8; PREFIX_LEN]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8] = VERSION;
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
    header: [u8; HEADER_LEN],
    prefix: [u8; PREFIX_LEN],
    chunk_size: usize,
    index: u32,
    /// Plaintext of the chunk being filled; emitted only once more data arrives, so the last
    /// chunk can be marked final even when it is full.
    buf: Vec<u8>,
}

impl<W: Write> EncryptWriter<W> {
    /// Starts a part with a fresh random nonce prefix.
    pub fn new(inner: W, key: &Key) -> io::Result<Self> {
        let mut prefix = [0u8; PREFIX_LEN];
        rand::fill(&mut prefix[..]);
        Self::with_prefix(inner, key, prefix, CHUNK_SIZE)
    }

    /// A writer with a chosen nonce prefix and chunk size: for known-answer tests only, since a
    /// reused prefix reuses nonces.
    fn with_prefix(
        mut inner: W,
        key: &Key,
        prefix: [u8; PREFIX_LEN],
        chunk_size: usize,
    ) -> io::Result<Self> {
        let size = u32::try_from(chunk_size).expect("chunk size fits in u32");
        let header = header(size, &prefix);
        inner.write_all(&header)?;
        Ok(EncryptWriter {
            inner,
            cipher: key.cipher(),
            header,
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
            .encrypt_inout_detached(&nonce, &self.header, self.buf.as_mut_slice().into())
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

impl crate::codec::Encode for EncryptWriter<Box<dyn crate::codec::Encode>> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        (*self).finish_inner()?.finish()
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
    cipher: Aes256Gcm,
    /// Read lazily, so constructing the reader does no I/O.
    state: Option<Stream>,
    done: bool,
    /// Decrypted plaintext of the current chunk, and how much of it was handed out.
    plain: Vec<u8>,
    pos: usize,
}

struct Stream {
    header: [u8; HEADER_LEN],
    prefix: [u8; PREFIX_LEN],
    record: usize,
    index: u32,
    /// The first byte of the next record, read to learn whether the current one is the last.
    peeked: Option<u8>,
}

impl<R: Read> DecryptReader<R> {
    pub fn new(inner: R, key: &Key) -> Self {
        DecryptReader {
            inner,
            cipher: key.cipher(),
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
        if header[8] != VERSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unsupported encryption format version {}", header[8]),
            ));
        }
        let chunk = u32::from_be_bytes(header[9..13].try_into().expect("4 bytes")) as usize;
        if chunk == 0 || chunk > MAX_CHUNK_SIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("invalid chunk size {chunk} in the encryption header"),
            ));
        }
        Ok(Stream {
            header,
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
        let opened = self.cipher.decrypt_inout_detached(
            &nonce(&s.prefix, s.index, last),
            &s.header,
            text.as_mut_slice().into(),
            &tag,
        );
        if opened.is_err() {
            // A whole record that opens with the other final flag tells what happened: read as
            // the last it was a middle chunk (the end was cut off), read as a middle one it was
            // the final chunk (something follows it).
            let mut again = record[..body].to_vec();
            let other = filled == s.record
                && self
                    .cipher
                    .decrypt_inout_detached(
                        &nonce(&s.prefix, s.index, !last),
                        &s.header,
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

    fn key(byte: u8) -> Key {
        Key([byte; 32])
    }

    fn encrypt(key: &Key, prefix: [u8; PREFIX_LEN], chunk: usize, data: &[u8]) -> Vec<u8> {
        let mut w = EncryptWriter::with_prefix(Vec::new(), key, prefix, chunk).unwrap();
        // Odd-sized writes, so chunking does not depend on the caller's write sizes.
        for piece in data.chunks(7) {
            w.write_all(piece).unwrap();
        }
        w.finish_inner().unwrap()
    }

    fn decrypt(key: &Key, stored: &[u8]) -> io::Result<Vec<u8>> {
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
        for chunk in [SMALL, CHUNK_SIZE] {
            for len in [0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk + 5] {
                let plain = data(len);
                let stored = encrypt(&k, [9; PREFIX_LEN], chunk, &plain);
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
                assert_eq!(decrypt(&k, &stored).unwrap(), plain, "len {len}");
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
    fn known_answer() {
        // Checked independently with scripts/decrypt_part.py (Python `cryptography`).
        let k = Key(core::array::from_fn(|i| i as u8));
        let stored = encrypt(&k, [0xA5; PREFIX_LEN], 16, b"INSERT INTO t VALUES(1);\n");
        assert_eq!(
            hex::encode(&stored),
            "44315232454e43000100000010a5a5a5a5a5a5a51b2879908ced6d9b7274332f80dd064f0d647084a4d4fbcd358588afa4ae0f28edbbd65e2133c0315a1be8d1bace3bd0d1b4a9be64db8a2d04"
        );
        assert_eq!(k.fingerprint(), "4df53752466eea1c");
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
