//! The byte streams of a backup part: SQL in, compressed bytes out, and back.
//!
//! A part is a sequence of members, each a page's SQL compressed on its own ([`Member`]), so the
//! pages of one part can compress on several threads at once; RFC 1952 lets a gzip file be
//! several members back to back, and `gunzip`, like the decoder here, reads them as one stream.
//! A page's member is itself gzip members of [`GZIP_SLICE`] bytes of SQL each, compressed whole
//! by libdeflate, or by a Huffman code alone ([`crate::format::huffman`]) when a sample shows LZ77
//! matches would barely shrink them.
//! The members then pass, in order, through a chain of [`Encode`] stages (encryption) ending in a
//! shared buffer that the backup drains as the part grows, so a part of any size passes through
//! a few megabytes of memory. The SHA-256 and size recorded in the manifest are of the stored
//! bytes: what verify and restore check before trusting anything they decode.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use libdeflater::{CompressionLvl, Compressor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::format::crypto::{DecryptReader, EncryptWriter, MAGIC, PartKey};
use crate::format::huffman;

/// How a part's SQL is compressed, as the manifest names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    None,
}

impl Compression {
    /// The file name suffix of a part.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Gzip => "sql.gz",
            Compression::None => "sql",
        }
    }
}

/// libdeflate's level 1. Compression is most of a backup's own CPU, and a backup of D1 waits on
/// it. On a dump of 310,000 event rows (33 MB of SQL, in slices of [`GZIP_SLICE`]) libdeflate's
/// level 1 took 0.21 s and stored 12.77 MB, where zlib-rs (flate2's streaming encoder, which
/// backups used before) took 0.39 s and stored 12.97 MB at its level 2, 0.27 s and 17.73 MB at
/// its level 1. libdeflate's level 2 stored 12.59 MB in 0.34 s, its level 6 11.49 MB in 0.64 s.
pub const GZIP_LEVEL: i32 = 1;

/// The SQL bytes a gzip member holds at most. libdeflate compresses a whole buffer at once, so a
/// page's SQL goes in slices of this size, each a member of its own: memory stays a slice, and
/// the matches lost at a slice's start (a window is 32 KiB) cost under 1% in size.
pub const GZIP_SLICE: usize = 256 * 1024;

thread_local! {
    /// Each compressing thread's libdeflate state (its hash tables are a few hundred KiB) and the
    /// buffer its samples are compressed into: made once a thread, not once a slice.
    static COMPRESSOR: std::cell::RefCell<Option<(Compressor, Vec<u8>)>> = const { std::cell::RefCell::new(None) };
}

/// The bytes of a slice of SQL compressed by LZ77 and by a Huffman code alone, to tell which the
/// whole slice gets ([`huffman::better_coded_alone`]): about 3% more work on a slice of
/// [`GZIP_SLICE`]. Slices under [`SAMPLED_FROM`] bytes (small tables) are not sampled: the
/// sample would cost them more than a wrong choice.
const SAMPLE_BYTES: usize = 8 * 1024;
const SAMPLED_FROM: usize = 8 * SAMPLE_BYTES;

/// Appends `sql` to `out` as one gzip member: by libdeflate, or by a Huffman code alone when a
/// sample from its middle shows LZ77 matches would barely shrink it (hex of random BLOBs).
fn deflate_member(sql: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    COMPRESSOR.with_borrow_mut(|slot| {
        let (compressor, scratch) = slot.get_or_insert_with(|| {
            let mut compressor =
                Compressor::new(CompressionLvl::new(GZIP_LEVEL).expect("a valid libdeflate level"));
            let scratch = vec![0; compressor.deflate_compress_bound(SAMPLE_BYTES)];
            (compressor, scratch)
        });
        if sql.len() >= SAMPLED_FROM {
            let middle = sql.len() / 2 - SAMPLE_BYTES / 2;
            let sample = &sql[middle..middle + SAMPLE_BYTES];
            let lz_bytes = compressor
                .deflate_compress(sample, scratch)
                .map_err(io::Error::other)?;
            if huffman::better_coded_alone(sample, lz_bytes) {
                huffman::gzip_member(sql, out);
                return Ok(());
            }
        }
        let start = out.len();
        out.resize(start + compressor.gzip_compress_bound(sql.len()), 0);
        let written = compressor
            .gzip_compress(sql, &mut out[start..])
            .map_err(io::Error::other)?;
        out.truncate(start + written);
        Ok(())
    })
}

/// One stage of an encoding chain. `finish` flushes the stage's trailer and then finishes the
/// stage it writes into.
pub trait Encode: Write + Send {
    fn finish(self: Box<Self>) -> io::Result<()>;
}

/// The end of every chain: a buffer the owner drains.
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("sink lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Encode for Sink {
    fn finish(self: Box<Self>) -> io::Result<()> {
        Ok(())
    }
}

/// One page's SQL, compressed on its own: a gzip member, or the SQL as is without compression.
pub struct Member {
    body: MemberBody,
    sql_bytes: u64,
}

enum MemberBody {
    /// The members compressed so far, and the SQL short of a slice waiting to be.
    Gzip {
        out: Vec<u8>,
        pending: Vec<u8>,
    },
    Plain(Vec<u8>),
}

/// A finished [`Member`]: its bytes, and the SQL bytes they hold.
pub struct Encoded {
    bytes: Vec<u8>,
    sql_bytes: u64,
}

impl Encoded {
    /// How many bytes a part appends for it.
    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
    }
}

impl Member {
    pub fn new(compression: Compression) -> Self {
        let body = match compression {
            Compression::Gzip => MemberBody::Gzip {
                out: Vec::new(),
                pending: Vec::new(),
            },
            Compression::None => MemberBody::Plain(Vec::new()),
        };
        Member { body, sql_bytes: 0 }
    }

    pub fn write(&mut self, sql: &[u8]) -> io::Result<()> {
        self.sql_bytes += sql.len() as u64;
        match &mut self.body {
            MemberBody::Gzip { out, pending } => {
                let mut sql = sql;
                if !pending.is_empty() {
                    let (head, rest) = sql.split_at(sql.len().min(GZIP_SLICE - pending.len()));
                    pending.extend_from_slice(head);
                    sql = rest;
                    if pending.len() < GZIP_SLICE {
                        return Ok(());
                    }
                    deflate_member(pending, out)?;
                    pending.clear();
                }
                // Whole slices straight from the caller's buffer, the rest kept for the next.
                let mut slices = sql.chunks_exact(GZIP_SLICE);
                for slice in &mut slices {
                    deflate_member(slice, out)?;
                }
                pending.extend_from_slice(slices.remainder());
                Ok(())
            }
            MemberBody::Plain(plain) => {
                plain.extend_from_slice(sql);
                Ok(())
            }
        }
    }

    pub fn finish(self) -> io::Result<Encoded> {
        let mut bytes = match self.body {
            MemberBody::Gzip { mut out, pending } => {
                // Even no SQL at all is a gzip member, so a member is always a gzip file.
                if !pending.is_empty() || out.is_empty() {
                    deflate_member(&pending, &mut out)?;
                }
                out
            }
            MemberBody::Plain(plain) => plain,
        };
        // The buffer grew by doubling; a member may wait its turn to be sent, at its own size.
        bytes.shrink_to_fit();
        Ok(Encoded {
            bytes,
            sql_bytes: self.sql_bytes,
        })
    }
}

/// Size and digest of what was stored: the digest as bytes, as a store that has its service check
/// what arrives sends it ([`crate::store::Upload::finish`]); the manifest writes it in hex.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub bytes: u64,
    pub sha256: [u8; 32],
    pub sql_bytes: u64,
}

/// Encodes one part. Append members with [`PartEncoder::append`] (or SQL as a member of its own
/// with [`PartEncoder::write`]), ship [`PartEncoder::take`] as it grows, and the last bytes from
/// [`PartEncoder::finish`].
pub struct PartEncoder {
    compression: Compression,
    head: Option<Box<dyn Encode>>,
    out: Arc<Mutex<Vec<u8>>>,
    sha: Sha256,
    stored: u64,
    sql_bytes: u64,
    encoded_bytes: u64,
    members: usize,
}

impl PartEncoder {
    /// Chains encryption (when given a key) into the buffer; members come in compressed, so what
    /// is encrypted is already compressed: ciphertext does not compress.
    pub fn new(compression: Compression, encryption: Option<&PartKey>) -> io::Result<Self> {
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut head: Box<dyn Encode> = Box::new(Sink(out.clone()));
        if let Some(key) = encryption {
            head = Box::new(EncryptWriter::new(head, key)?);
        }
        Ok(PartEncoder {
            compression,
            head: Some(head),
            out,
            sha: Sha256::new(),
            stored: 0,
            sql_bytes: 0,
            encoded_bytes: 0,
            members: 0,
        })
    }

    /// Adds a member, made with this part's compression, after the ones before.
    pub fn append(&mut self, member: Encoded) -> io::Result<()> {
        self.sql_bytes += member.sql_bytes;
        self.encoded_bytes += member.bytes.len() as u64;
        self.members += 1;
        self.head
            .as_mut()
            .expect("appended only before finish")
            .write_all(&member.bytes)
    }

    /// Adds `sql` as a member of its own.
    pub fn write(&mut self, sql: &[u8]) -> io::Result<()> {
        let mut member = Member::new(self.compression);
        member.write(sql)?;
        self.append(member.finish()?)
    }

    /// Compressed bytes appended so far: what the part will store, within encryption's header
    /// and 16 bytes every 64 KiB.
    pub fn encoded_bytes(&self) -> u64 {
        self.encoded_bytes
    }

    /// The encoded bytes produced since the last call.
    pub fn take(&mut self) -> Bytes {
        let chunk = std::mem::take(&mut *self.out.lock().expect("sink lock"));
        self.sha.update(&chunk);
        self.stored += chunk.len() as u64;
        Bytes::from(chunk)
    }

    /// Ends the stream: the last bytes, and the size and digest of everything produced. A gzip
    /// part with no member gets an empty one, so it is still a gzip file.
    pub fn finish(mut self) -> io::Result<(Bytes, Stored)> {
        if self.members == 0 && self.compression == Compression::Gzip {
            self.write(b"")?;
        }
        self.head.take().expect("finished once").finish()?;
        let last = self.take();
        Ok((
            last,
            Stored {
                bytes: self.stored,
                sha256: self.sha.finalize().into(),
                sql_bytes: self.sql_bytes,
            },
        ))
    }
}

/// Passes bytes through while hashing and counting them.
pub struct HashingReader<R> {
    inner: R,
    sha: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            sha: Sha256::new(),
            bytes: 0,
        }
    }

    /// Reads whatever the decoder left unread, then returns the size and digest of the whole
    /// stream.
    pub fn finish(mut self) -> io::Result<(u64, String)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((self.bytes, hex::encode(self.sha.finalize())))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// The decoding chain for a part: stored bytes in, decrypted (given a key), decompressed, SQL out.
/// Without a key, a part that starts like an encrypted one is refused: its backup's manifest was
/// made to look plain.
pub fn decoder<'a>(
    stored: impl Read + 'a,
    compression: Compression,
    key: Option<&PartKey>,
) -> Box<dyn Read + 'a> {
    let plain: Box<dyn Read + 'a> = match key {
        Some(key) => Box::new(DecryptReader::new(stored, key)),
        None => Box::new(NotEncrypted::new(stored)),
    };
    match compression {
        Compression::Gzip => Box::new(MultiGzDecoder::new(plain)),
        Compression::None => plain,
    }
}

/// Passes a plain part through, refusing one that starts with the encrypted parts' magic.
struct NotEncrypted<R> {
    inner: R,
    /// The first bytes, read to be checked, and how many of them were handed on.
    head: Option<(Vec<u8>, usize)>,
}

impl<R: Read> NotEncrypted<R> {
    fn new(inner: R) -> Self {
        NotEncrypted { inner, head: None }
    }
}

impl<R: Read> Read for NotEncrypted<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.head.is_none() {
            let mut head = Vec::with_capacity(MAGIC.len());
            (&mut self.inner)
                .take(MAGIC.len() as u64)
                .read_to_end(&mut head)?;
            if head == MAGIC {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the part is encrypted, but its manifest says the backup is not: the manifest was altered",
                ));
            }
            self.head = Some((head, 0));
        }
        let (head, given) = self.head.as_mut().expect("read above");
        if *given < head.len() {
            let n = out.len().min(head.len() - *given);
            out[..n].copy_from_slice(&head[*given..*given + n]);
            *given += n;
            return Ok(n);
        }
        self.inner.read(out)
    }
}

/// Encryption is the last stage of a part's pipeline: finishing it writes the final chunk, then
/// finishes the stage it writes into.
impl Encode for EncryptWriter<Box<dyn Encode>> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        (*self).finish_inner()?.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::format::crypto::Key;

    fn part_key(hex: &str) -> PartKey {
        PartKey::bound(
            &Key::parse(hex).unwrap(),
            "20261124T221500Z",
            "data/0000.sql.gz",
        )
    }

    fn roundtrip(compression: Compression, key: Option<&PartKey>, data: &[u8], chunk: usize) {
        let mut enc = PartEncoder::new(compression, key).unwrap();
        let mut stored = Vec::new();
        for piece in data.chunks(chunk.max(1)) {
            enc.write(piece).unwrap();
            stored.extend_from_slice(&enc.take());
        }
        let (last, summary) = enc.finish().unwrap();
        stored.extend_from_slice(&last);
        assert_eq!(summary.bytes, stored.len() as u64);
        assert_eq!(summary.sha256, <[u8; 32]>::from(Sha256::digest(&stored)));
        assert_eq!(summary.sql_bytes, data.len() as u64);

        let mut hashing = HashingReader::new(&stored[..]);
        let mut decoded = Vec::new();
        decoder(&mut hashing, compression, key)
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, data);
        assert_eq!(
            hashing.finish().unwrap(),
            (summary.bytes, hex::encode(summary.sha256))
        );
    }

    #[test]
    fn encode_decode_roundtrip() {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let key = part_key(&"ab".repeat(32));
        for compression in [Compression::Gzip, Compression::None] {
            for key in [None, Some(&key)] {
                for data in [&b""[..], b"SELECT 1;\n", &big] {
                    for chunk in [1, 7, 65_536] {
                        // Every write is a member of its own: a few hundred at most.
                        if data.len() / chunk < 500 {
                            roundtrip(compression, key, data, chunk);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn members_made_on_other_threads_read_as_one_stream() {
        let pages: Vec<Vec<u8>> = (0..5)
            .map(|p| {
                format!("INSERT INTO t VALUES({p});\n")
                    .repeat(1000 * p)
                    .into_bytes()
            })
            .collect();
        let key = part_key(&"cd".repeat(32));
        for compression in [Compression::Gzip, Compression::None] {
            for key in [None, Some(&key)] {
                let members: Vec<Encoded> = pages
                    .iter()
                    .cloned()
                    .map(|page| {
                        std::thread::spawn(move || {
                            let mut member = Member::new(compression);
                            member.write(&page).unwrap();
                            member.finish().unwrap()
                        })
                    })
                    .collect::<Vec<_>>()
                    .into_iter()
                    .map(|t| t.join().unwrap())
                    .collect();
                let mut enc = PartEncoder::new(compression, key).unwrap();
                let mut stored = Vec::new();
                for member in members {
                    enc.append(member).unwrap();
                    stored.extend_from_slice(&enc.take());
                }
                let (last, summary) = enc.finish().unwrap();
                stored.extend_from_slice(&last);
                assert_eq!(
                    summary.sql_bytes,
                    pages.iter().map(|p| p.len() as u64).sum::<u64>()
                );
                let mut decoded = Vec::new();
                decoder(&stored[..], compression, key)
                    .read_to_end(&mut decoded)
                    .unwrap();
                assert_eq!(
                    decoded,
                    pages.concat(),
                    "{compression:?}, key {}",
                    key.is_some()
                );
            }
        }
    }

    /// The gzip members of `bytes`, each decoded on its own.
    fn gzip_members(mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut members = Vec::new();
        while !bytes.is_empty() {
            let mut one = flate2::bufread::GzDecoder::new(bytes);
            let mut sql = Vec::new();
            one.read_to_end(&mut sql).unwrap();
            members.push(sql);
            bytes = one.into_inner();
        }
        members
    }

    #[test]
    fn a_member_is_gzip_members_of_whole_slices() {
        const S: usize = GZIP_SLICE;
        // (writes, SQL bytes each member holds)
        let cases: Vec<(Vec<usize>, Vec<usize>)> = vec![
            (vec![], vec![0]),
            (vec![0], vec![0]),
            (vec![10], vec![10]),
            (vec![S - 1], vec![S - 1]),
            (vec![S], vec![S]),
            (vec![S + 1], vec![S, 1]),
            (vec![3 * S + 5], vec![S, S, S, 5]),
            (vec![S - 1, 2], vec![S, 1]),
            (vec![S + 7, S + 7, S + 7], vec![S, S, S, 21]),
            (vec![1; 1000], vec![1000]),
        ];
        for (writes, want) in cases {
            let sql: Vec<u8> = (0..writes.iter().sum::<usize>())
                .map(|i| b"INSERT INTO t VALUES(1,'x');\n"[i % 29])
                .collect();
            let mut member = Member::new(Compression::Gzip);
            let mut at = 0;
            for n in &writes {
                member.write(&sql[at..at + n]).unwrap();
                at += n;
            }
            let encoded = member.finish().unwrap();
            assert_eq!(encoded.sql_bytes, sql.len() as u64, "{writes:?}");
            let members = gzip_members(&encoded.bytes);
            let sizes: Vec<usize> = members.iter().map(Vec::len).collect();
            assert_eq!(sizes, want, "{writes:?}");
            assert_eq!(members.concat(), sql, "{writes:?}");
        }
    }

    #[test]
    fn an_encrypted_part_read_as_plain_is_refused() {
        let key = part_key(&"ab".repeat(32));
        for compression in [Compression::Gzip, Compression::None] {
            let mut enc = PartEncoder::new(compression, Some(&key)).unwrap();
            enc.write(b"SELECT 1;\n").unwrap();
            let mut stored = enc.take().to_vec();
            stored.extend_from_slice(&enc.finish().unwrap().0);
            let err = decoder(&stored[..], compression, None)
                .read_to_end(&mut Vec::new())
                .unwrap_err();
            assert!(err.to_string().contains("manifest was altered"), "{err}");
        }
        // Plain parts shorter than the magic, or sharing only its start, pass through whole.
        for plain in [&b""[..], b"D1R2", b"D1R2ENC!SELECT 1;"] {
            let mut out = Vec::new();
            decoder(plain, Compression::None, None)
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, plain);
        }
    }

    #[test]
    fn corruption_is_an_error_or_a_digest_mismatch() {
        let mut enc = PartEncoder::new(Compression::Gzip, None).unwrap();
        enc.write(b"INSERT INTO t VALUES(1);\n".repeat(100).as_slice())
            .unwrap();
        let mut stored = enc.take().to_vec();
        let (last, summary) = enc.finish().unwrap();
        stored.extend_from_slice(&last);
        for at in [0, stored.len() / 2, stored.len() - 1] {
            let mut bad = stored.clone();
            bad[at] ^= 0x01;
            let mut hashing = HashingReader::new(&bad[..]);
            let decoded =
                decoder(&mut hashing, Compression::Gzip, None).read_to_end(&mut Vec::new());
            let digest = hashing.finish().unwrap().1;
            assert!(
                decoded.is_err() || digest != hex::encode(summary.sha256),
                "flip at {at} went unnoticed"
            );
        }
    }
}
