//! gzip members coded with Huffman codes alone, no LZ77 matches.
//!
//! BLOBs reach a dump as hex (`X'..'`), and hex of random bytes (images, ciphertext, hashes)
//! holds no repeats worth a match: libdeflate's level 1 spends most of a wide-row backup's CPU
//! searching for them and ends up larger than a plain Huffman code of the same bytes (on the
//! benchmark's wide rows, 54.1% of the SQL against 51.8%). A single dynamic block of literals is
//! a few table lookups a byte. [`better_coded_alone`] tells, from a sample, which SQL this is.

/// The longest code DEFLATE allows for literals (RFC 1951, 3.2.7).
const MAX_LITERAL_BITS: u8 = 15;
/// The longest code of the code-length alphabet.
const MAX_LENGTH_BITS: u8 = 7;
/// Literal bytes 0..=255 and the end-of-block code, 256.
const LITERALS: usize = 257;
const END_OF_BLOCK: usize = 256;
/// The order the code-length code's lengths are sent in (RFC 1951, 3.2.7).
const LENGTH_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

/// Appends `data` to `out` as one gzip member: one final dynamic-Huffman DEFLATE block of
/// literals and the end-of-block code.
pub(crate) fn gzip_member(data: &[u8], out: &mut Vec<u8>) {
    let mut freqs = histogram(data);
    freqs[END_OF_BLOCK] = 1;
    let lengths = code_lengths(&freqs, MAX_LITERAL_BITS);
    let codes = canonical_codes(&lengths);
    // A Huffman code takes at most about 8 bits a byte: a byte more in eight covers it and the header.
    out.reserve(data.len() + data.len() / 8 + 512);
    // ID1 ID2, deflate, no flags, no mtime, no extra flags, OS unknown.
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    let mut bits = Bits::new(out);
    bits.put(1, 1); // BFINAL
    bits.put(2, 2); // BTYPE 10: dynamic Huffman codes
    block_header(&mut bits, &lengths);
    let table: Vec<u32> = (0..LITERALS)
        .map(|s| codes[s] | u32::from(lengths[s]) << 16)
        .collect();
    for &byte in data {
        let entry = table[usize::from(byte)];
        bits.put(entry & 0xffff, entry >> 16);
    }
    bits.put(codes[END_OF_BLOCK], u32::from(lengths[END_OF_BLOCK]));
    bits.finish();
    out.extend_from_slice(&libdeflater::crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
}

/// Whether `sample` (a slice of the SQL about to be compressed) comes out smaller by a Huffman
/// code alone than within 3% of it by LZ77 at libdeflate's level 1 (`lz_bytes`, the sample
/// compressed so): then matches are not worth their search.
pub(crate) fn better_coded_alone(sample: &[u8], lz_bytes: usize) -> bool {
    let freqs = histogram(sample);
    let lengths = code_lengths(&freqs, MAX_LITERAL_BITS);
    let bits: u64 = freqs
        .iter()
        .zip(&lengths)
        .map(|(&f, &l)| u64::from(f) * u64::from(l))
        .sum();
    let alone = bits.div_ceil(8);
    (lz_bytes as u64) * 100 >= alone * 97
}

fn histogram(data: &[u8]) -> [u32; LITERALS] {
    let mut freqs = [0u32; LITERALS];
    for &byte in data {
        freqs[usize::from(byte)] += 1;
    }
    freqs
}

/// The lengths, at most `limit` bits, of a Huffman code for symbols of frequencies `freqs`: zero
/// for a symbol that never occurs. At least two symbols get a code, so that the code is complete
/// (a decoder may refuse an incomplete one). When the optimal code is too deep, the frequencies
/// are halved (a symbol that occurs keeps at least 1) until it is not.
pub(crate) fn code_lengths(freqs: &[u32], limit: u8) -> Vec<u8> {
    let mut weights: Vec<u64> = freqs.iter().map(|&f| u64::from(f)).collect();
    let mut used: Vec<usize> = (0..freqs.len()).filter(|&s| freqs[s] > 0).collect();
    let mut spare = (0..freqs.len()).filter(|&s| freqs[s] == 0);
    while used.len() < 2 {
        let s = spare.next().expect("an alphabet of two symbols or more");
        weights[s] = 1;
        used.push(s);
    }
    loop {
        let lengths = tree_depths(&weights, &used);
        if lengths.iter().all(|&l| l <= limit) {
            return lengths;
        }
        for &s in &used {
            weights[s] = (weights[s] / 2).max(1);
        }
    }
}

/// The depth of every symbol in `used` in a Huffman tree over `weights` (0 for the others).
fn tree_depths(weights: &[u64], used: &[usize]) -> Vec<u8> {
    // Leaves sorted by weight, then internal nodes made in order of weight: the two lightest of
    // the leaves and nodes not yet merged are merged next (the two-queue construction).
    let mut leaves: Vec<(u64, usize)> = used.iter().map(|&s| (weights[s], s)).collect();
    leaves.sort_unstable();
    let n = leaves.len();
    // Node i < n is leaf i; node n + k is the k-th merge. parent[i] is the node i merged into.
    let mut weight: Vec<u64> = leaves.iter().map(|&(w, _)| w).collect();
    let mut parent = vec![0usize; 2 * n - 1];
    let (mut next_leaf, mut next_node) = (0, n);
    let take = |weight: &Vec<u64>, next_leaf: &mut usize, next_node: &mut usize| {
        if *next_leaf < n
            && (*next_node >= weight.len() || weight[*next_leaf] <= weight[*next_node])
        {
            *next_leaf += 1;
            *next_leaf - 1
        } else {
            *next_node += 1;
            *next_node - 1
        }
    };
    for k in 0..n - 1 {
        let a = take(&weight, &mut next_leaf, &mut next_node);
        let b = take(&weight, &mut next_leaf, &mut next_node);
        weight.push(weight[a] + weight[b]);
        parent[a] = n + k;
        parent[b] = n + k;
    }
    // The root is the last node; a node's depth is its parent's plus one.
    let mut depth = vec![0u8; 2 * n - 1];
    for node in (0..2 * n - 2).rev() {
        depth[node] = depth[parent[node]].saturating_add(1);
    }
    let mut lengths = vec![0u8; weights.len()];
    for (i, &(_, s)) in leaves.iter().enumerate() {
        lengths[s] = depth[i];
    }
    lengths
}

/// The canonical codes of `lengths` (RFC 1951, 3.2.2), bit-reversed, as DEFLATE sends a code's
/// first bit first and [`Bits`] fills bytes from their lowest bit.
fn canonical_codes(lengths: &[u8]) -> Vec<u32> {
    let mut count = [0u32; 16];
    for &l in lengths.iter().filter(|&&l| l > 0) {
        count[usize::from(l)] += 1;
    }
    let mut next = [0u32; 16];
    let mut code = 0;
    for bits in 1..16 {
        code = (code + count[bits - 1]) << 1;
        next[bits] = code;
    }
    lengths
        .iter()
        .map(|&l| {
            if l == 0 {
                return 0;
            }
            let code = next[usize::from(l)];
            next[usize::from(l)] += 1;
            code.reverse_bits() >> (32 - u32::from(l))
        })
        .collect()
}

/// The header of a dynamic block: the literal/length code's lengths (257 codes: the bytes and
/// end of block, no lengths, as no match is sent), a distance code of two unused 1-bit codes (a
/// complete code, which every decoder takes; zero distance codes is legal but older ones refuse
/// it), both sent by the code-length code, one length a symbol.
fn block_header(bits: &mut Bits<'_>, literal_lengths: &[u8]) {
    let mut sent: Vec<u8> = literal_lengths.to_vec();
    sent.extend_from_slice(&[1, 1]);
    let mut freqs = [0u32; 19];
    for &l in &sent {
        freqs[usize::from(l)] += 1;
    }
    let length_lengths = code_lengths(&freqs, MAX_LENGTH_BITS);
    let length_codes = canonical_codes(&length_lengths);
    let count = LENGTH_ORDER
        .iter()
        .rposition(|&s| length_lengths[s] > 0)
        .map_or(4, |last| (last + 1).max(4));
    bits.put(0, 5); // HLIT: 257 literal/length codes
    bits.put(1, 5); // HDIST: 2 distance codes
    bits.put(count as u32 - 4, 4); // HCLEN
    for &s in &LENGTH_ORDER[..count] {
        bits.put(u32::from(length_lengths[s]), 3);
    }
    for &l in &sent {
        let s = usize::from(l);
        bits.put(length_codes[s], u32::from(length_lengths[s]));
    }
}

/// Bits written from each byte's lowest bit up, as DEFLATE packs them.
struct Bits<'a> {
    out: &'a mut Vec<u8>,
    pending: u64,
    count: u32,
}

impl<'a> Bits<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        Bits {
            out,
            pending: 0,
            count: 0,
        }
    }

    /// Appends the low `count` bits of `value` (at most 16).
    fn put(&mut self, value: u32, count: u32) {
        self.pending |= u64::from(value) << self.count;
        self.count += count;
        if self.count >= 32 {
            self.out
                .extend_from_slice(&(self.pending as u32).to_le_bytes());
            self.pending >>= 32;
            self.count -= 32;
        }
    }

    /// Writes the bits left, the last byte padded with zeros.
    fn finish(self) {
        let bytes = self.count.div_ceil(8) as usize;
        self.out
            .extend_from_slice(&self.pending.to_le_bytes()[..bytes]);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn system_gunzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new("gzip")
            .arg("-dc")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("gzip(1) runs");
        let mut stdin = child.stdin.take().unwrap();
        let input = bytes.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert!(output.status.success(), "gzip -dc failed");
        output.stdout
    }

    /// A code is a prefix code that uses its whole space (Kraft's sum is exactly 1), no deeper
    /// than its limit.
    fn assert_complete(lengths: &[u8], limit: u8, what: &str) {
        assert!(lengths.iter().all(|&l| l <= limit), "{what}: {lengths:?}");
        let kraft: u64 = lengths
            .iter()
            .filter(|&&l| l > 0)
            .map(|&l| 1u64 << (32 - u32::from(l)))
            .sum();
        assert_eq!(kraft, 1 << 32, "{what}: {lengths:?}");
    }

    #[test]
    fn code_lengths_table() {
        let fibonacci: Vec<u32> = (0..40)
            .scan((1u32, 1u32), |(a, b), _| {
                let next = *a;
                (*a, *b) = (*b, a.saturating_add(*b));
                Some(next)
            })
            .collect();
        // (frequencies, limit, expected lengths where known)
        let cases: Vec<(Vec<u32>, u8, Option<Vec<u8>>)> = vec![
            (vec![0, 0, 0], 15, Some(vec![1, 1, 0])),
            (vec![0, 5, 0], 15, Some(vec![1, 1, 0])),
            (vec![3, 3], 15, Some(vec![1, 1])),
            (vec![1, 1, 2], 15, Some(vec![2, 2, 1])),
            (vec![10, 1, 1, 1, 1], 15, Some(vec![1, 3, 3, 3, 3])),
            (vec![1; 256], 15, Some(vec![8; 256])),
            // Would be 39 deep: limited.
            (fibonacci.clone(), 15, None),
            (fibonacci[..19].to_vec(), 7, None),
        ];
        for (freqs, limit, expected) in cases {
            let lengths = code_lengths(&freqs, limit);
            let what = format!("{freqs:?} at {limit}");
            assert_complete(&lengths, limit, &what);
            if let Some(expected) = expected {
                assert_eq!(lengths, expected, "{what}");
            }
            for (s, &f) in freqs.iter().enumerate() {
                if f > 0 {
                    assert!(lengths[s] > 0, "{what}: symbol {s} occurs and has no code");
                }
            }
        }
    }

    #[test]
    fn members_decode_to_their_data() {
        let hex: Vec<u8> = (0..50_000u32)
            .flat_map(|i| format!("{:02X}", i.wrapping_mul(2_654_435_761) >> 24).into_bytes())
            .collect();
        let skewed: Vec<u8> = (0..40u8)
            .flat_map(|i| std::iter::repeat_n(i, 1usize << (i / 3)))
            .collect();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("one byte", vec![b'x']),
            ("one byte repeated", vec![0; 70_000]),
            ("every byte", (0..=255).collect()),
            ("hex", hex),
            ("skewed past 15 bits", skewed),
            (
                "sql",
                b"INSERT INTO \"t\" VALUES (1,'it''s',X'00FF');\n".repeat(300),
            ),
        ];
        for (what, data) in cases {
            let mut out = b"before".to_vec();
            gzip_member(&data, &mut out);
            assert_eq!(&out[..6], b"before", "{what}");
            assert_eq!(gunzip(&out[6..]), data, "{what}");
            // Members back to back are one stream, to this decoder and to gzip(1).
            let mut twice = out[6..].to_vec();
            twice.extend_from_slice(&out[6..]);
            let both = [data.clone(), data].concat();
            assert_eq!(gunzip(&twice), both, "{what}");
            assert_eq!(system_gunzip(&twice), both, "{what}: gzip -dc");
        }
    }

    proptest::proptest! {
        /// Any bytes, spread over few symbols or many (`shift` folds them together), decode to
        /// themselves.
        #[test]
        fn any_bytes_round_trip(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20_000),
            shift in 0u32..8,
        ) {
            let data: Vec<u8> = data.iter().map(|b| b >> shift).collect();
            let mut out = Vec::new();
            gzip_member(&data, &mut out);
            proptest::prop_assert_eq!(gunzip(&out), data);
        }
    }

    #[test]
    fn hex_is_coded_alone_and_sql_text_with_matches() {
        let mut lz = libdeflater::Compressor::new(libdeflater::CompressionLvl::new(1).unwrap());
        let mut scratch = vec![0; 1 << 16];
        let mut random = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            random
        };
        let blob_rows: String = (0..200)
            .map(|i| {
                let blob: String = (0..40).map(|_| format!("{:016X}", next())).collect();
                format!("({i},X'{blob}'),")
            })
            .collect();
        let text_rows: String = (0..200)
            .map(|i| {
                format!(
                    "({i},1700000{i:03},'signup','user {}',NULL),",
                    next() % 1000
                )
            })
            .collect();
        // (sample, coded alone)
        let cases = [
            (blob_rows.as_bytes(), true),
            (text_rows.as_bytes(), false),
            (&[b'a'; 8192][..], false),
        ];
        for (sample, alone) in cases {
            let sample = &sample[..sample.len().min(8192)];
            let lz_bytes = lz.deflate_compress(sample, &mut scratch).unwrap();
            assert_eq!(
                better_coded_alone(sample, lz_bytes),
                alone,
                "{}",
                String::from_utf8_lossy(&sample[..60])
            );
        }
    }
}
