//! The byte streams of a backup part: SQL in, compressed bytes out, and back.
//!
//! A part is a sequence of members, each a page's SQL compressed on its own ([`Member`]), so the
//! pages of one part can compress on several threads at once; RFC 1952 lets a gzip file be
//! several members back to back, and `gunzip`, like the decoder here, reads them as one stream.
//! The members then pass, in order, through a chain of [`Encode`] stages (encryption) ending in a
//! shared buffer that the backup drains as the part grows, so a part of any size passes through
//! a few megabytes of memory. The SHA-256 and size recorded in the manifest are of the stored
//! bytes: what verify and restore check before trusting anything they decode.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use flate2::Compression as Level;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::crypto::{DecryptReader, EncryptWriter, Key};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
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

/// gzip's level 2: on a dump of 310,000 event rows (33 MB of SQL) zlib-rs takes 0.50 s and stores
/// 12.97 MB, against 0.63 s and 12.55 MB at level 3, 0.80 s and 12.24 MB at level 4 and 0.98 s
/// and 12.00 MB at the usual level 6; level 1 takes 0.25 s but stores 41% more. Compression is
/// most of a backup's own CPU, and a backup of D1 waits on it: 3% more bytes for a fifth less.
pub const GZIP_LEVEL: u32 = 2;

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
    Gzip(Box<GzEncoder<Vec<u8>>>),
    Plain(Vec<u8>),
}

/// A finished [`Member`]: its bytes, and the SQL bytes they hold.
pub struct Encoded {
    bytes: Vec<u8>,
    sql_bytes: u64,
}

impl Member {
    pub fn new(compression: Compression) -> Self {
        let body = match compression {
            Compression::Gzip => {
                MemberBody::Gzip(Box::new(GzEncoder::new(Vec::new(), Level::new(GZIP_LEVEL))))
            }
            Compression::None => MemberBody::Plain(Vec::new()),
        };
        Member { body, sql_bytes: 0 }
    }

    pub fn write(&mut self, sql: &[u8]) -> io::Result<()> {
        self.sql_bytes += sql.len() as u64;
        match &mut self.body {
            MemberBody::Gzip(gz) => gz.write_all(sql),
            MemberBody::Plain(plain) => {
                plain.extend_from_slice(sql);
                Ok(())
            }
        }
    }

    pub fn finish(self) -> io::Result<Encoded> {
        let mut bytes = match self.body {
            MemberBody::Gzip(gz) => gz.finish()?,
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

/// Size and digest of what was stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub bytes: u64,
    pub sha256: String,
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
    members: usize,
}

impl PartEncoder {
    /// Chains encryption (when given a key) into the buffer; members come in compressed, so what
    /// is encrypted is already compressed: ciphertext does not compress.
    pub fn new(compression: Compression, encryption: Option<&Key>) -> io::Result<Self> {
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
            members: 0,
        })
    }

    /// Adds a member, made with this part's compression, after the ones before.
    pub fn append(&mut self, member: Encoded) -> io::Result<()> {
        self.sql_bytes += member.sql_bytes;
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

    /// SQL bytes written so far.
    pub fn sql_bytes(&self) -> u64 {
        self.sql_bytes
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
                sha256: hex::encode(self.sha.finalize()),
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
pub fn decoder<'a>(
    stored: impl Read + 'a,
    compression: Compression,
    key: Option<&Key>,
) -> Box<dyn Read + 'a> {
    let plain: Box<dyn Read + 'a> = match key {
        Some(key) => Box::new(DecryptReader::new(stored, key)),
        None => Box::new(stored),
    };
    match compression {
        Compression::Gzip => Box::new(MultiGzDecoder::new(plain)),
        Compression::None => plain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(compression: Compression, key: Option<&Key>, data: &[u8], chunk: usize) {
        let mut enc = PartEncoder::new(compression, key).unwrap();
        let mut stored = Vec::new();
        for piece in data.chunks(chunk.max(1)) {
            enc.write(piece).unwrap();
            stored.extend_from_slice(&enc.take());
        }
        let (last, summary) = enc.finish().unwrap();
        stored.extend_from_slice(&last);
        assert_eq!(summary.bytes, stored.len() as u64);
        assert_eq!(summary.sha256, hex::encode(Sha256::digest(&stored)));
        assert_eq!(summary.sql_bytes, data.len() as u64);

        let mut hashing = HashingReader::new(&stored[..]);
        let mut decoded = Vec::new();
        decoder(&mut hashing, compression, key)
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, data);
        assert_eq!(hashing.finish().unwrap(), (summary.bytes, summary.sha256));
    }

    #[test]
    fn encode_decode_roundtrip() {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let key = Key::parse(&"ab".repeat(32)).unwrap();
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
        let key = Key::parse(&"cd".repeat(32)).unwrap();
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
                decoded.is_err() || digest != summary.sha256,
                "flip at {at} went unnoticed"
            );
        }
    }
}
