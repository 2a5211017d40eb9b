//! Fixture data the tests make at random, of the shapes real applications hold and d1r2 must
//! carry exactly: reals of every kind SQLite stores (zeros of either sign, subnormals, infinities,
//! any bits) and text that quotes SQL transactions, as notes about SQL do. Each generator is seeded, its seed printed, so a failure can be
//! replayed with `D1R2_TEST_SEED`.

/// A seeded generator (splitmix64).
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from `D1R2_TEST_SEED`, or at random; the seed is printed.
    pub fn new() -> Rng {
        let seed = std::env::var("D1R2_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random);
        eprintln!("D1R2_TEST_SEED={seed}");
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// Text that quotes SQL transactions among other words: `BEGIN TRANSACTION`, `COMMIT` and
    /// their kin in varied case and spacing, with or without their semicolons, quotes, CRs and
    /// line ends around them.
    pub fn sql_quoting_text(&mut self) -> String {
        const WORDS: &[&str] = &["begin", "transaction", "commit", "end", "rollback"];
        const GLUE: &[&str] = &[
            " ", "  ", "\t", "\n", "\r\n", ";", "; ", "'", "\"", "", "--",
        ];
        let mut text = String::new();
        for _ in 0..=self.below(12) {
            let phrase = match self.below(4) {
                0 => "BEGIN TRANSACTION;".to_string(),
                1 => "COMMIT;".to_string(),
                _ => (*self.pick(WORDS)).to_string(),
            };
            let vary = self.below(2) == 0;
            for c in phrase.chars() {
                match self.below(5) {
                    0 if vary => text.extend(c.to_lowercase()),
                    1 if vary => text.extend(c.to_uppercase()),
                    _ => text.push(c),
                }
            }
            let glue = *self.pick(GLUE);
            text.push_str(glue);
        }
        text
    }

    /// A real SQLite can store (NaN it stores as NULL): often a zero of either sign, a subnormal
    /// or an infinity, otherwise any bit pattern.
    pub fn real(&mut self) -> f64 {
        let sign = self.next() << 63;
        let f = match self.below(6) {
            0 => f64::from_bits(sign),
            1 => f64::from_bits(sign | self.below(1 << 52)),
            2 => f64::from_bits(sign | 0x7FF0_0000_0000_0000),
            _ => f64::from_bits(self.next()),
        };
        if f.is_nan() { self.real() } else { f }
    }
}

/// `f` as a literal SQLite reads back as the same bits: Rust's shortest round-trip text (always
/// with a `.` or an exponent, so a real), infinity as SQLite's own `9e999`.
pub fn real_literal(f: f64) -> String {
    match f {
        f if f == f64::INFINITY => "9e999".to_string(),
        f if f == f64::NEG_INFINITY => "-9e999".to_string(),
        f => format!("{f:?}"),
    }
}
