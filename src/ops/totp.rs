//! TOTP codes (RFC 6238) for apps whose own backup endpoint takes a time-based bearer token.
//!
//! The secret comes only from `TOTP_SECRET`, as base32 (spaces, padding and lower case
//! tolerated, as authenticator apps print it) or as an `otpauth://` URI whose parameters become
//! the defaults. In action mode the code is a secret output, masked before it is written.

use totp_rs::{Algorithm as Hmac, Builder, Secret};

use crate::error::{Result, bad_input};
use crate::model::report::Report;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

/// The shape of the codes (`--digits`, `--period`, `--algorithm`), shared by `totp` and
/// `trigger`; unset values come from an `otpauth://` secret, then RFC 6238's defaults.
#[derive(Debug, Clone, Default)]
pub(crate) struct TotpShape {
    pub digits: Option<u8>,
    pub period: Option<u64>,
    pub algorithm: Option<Algorithm>,
}

/// A secret with its code shape settled: everything needed to make a code for any time.
#[derive(Clone)]
pub(crate) struct Generator {
    key: Vec<u8>,
    pub algorithm: Algorithm,
    pub digits: u8,
    pub period: u64,
}

impl Generator {
    /// From `TOTP_SECRET` (given as `secret`) and the flags; a missing or malformed secret is
    /// bad input, named without repeating it.
    pub(crate) fn new(shape: &TotpShape, secret: Option<&str>) -> Result<Self> {
        let secret = secret.filter(|s| !s.trim().is_empty()).ok_or_else(|| {
            bad_input("TOTP_SECRET is not set: put the base32 secret (or otpauth:// URI) in it")
        })?;
        let spec = parse_secret(secret).map_err(|why| bad_input(format!("TOTP_SECRET: {why}")))?;
        Ok(Generator {
            digits: shape.digits.or(spec.digits).unwrap_or(6),
            period: shape.period.or(spec.period).unwrap_or(30),
            algorithm: shape
                .algorithm
                .or(spec.algorithm)
                .unwrap_or(Algorithm::Sha1),
            key: spec.key,
        })
    }

    /// The code for unix time `at`.
    pub(crate) fn code(&self, at: u64) -> String {
        code(&self.key, self.algorithm, self.digits, self.period, at)
    }
}

/// The flags of `d1r2 totp`; each field is the flag of its name, documented (defaults and
/// bounds) where the command line parses it, in `cli/args.rs`.
#[derive(Debug, Clone)]
pub(crate) struct TotpOptions {
    pub shape: TotpShape,
    pub at: Option<u64>,
}

/// A parsed secret and the parameters an `otpauth://` URI carried with it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SecretSpec {
    pub key: Vec<u8>,
    pub algorithm: Option<Algorithm>,
    pub digits: Option<u8>,
    pub period: Option<u64>,
}

/// Parses `TOTP_SECRET`. Errors never repeat the value.
pub(crate) fn parse_secret(text: &str) -> Result<SecretSpec, String> {
    let text = text.trim();
    let mut spec = SecretSpec {
        key: Vec::new(),
        algorithm: None,
        digits: None,
        period: None,
    };
    let encoded = if let Some(uri) = text.strip_prefix("otpauth://") {
        let query = uri
            .split_once('?')
            .map(|(_, q)| q)
            .ok_or("the otpauth:// URI has no parameters")?;
        let mut secret = None;
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name.to_ascii_lowercase().as_str() {
                "secret" => secret = Some(value.to_string()),
                "algorithm" => {
                    spec.algorithm = Some(match value.to_ascii_uppercase().as_str() {
                        "SHA1" => Algorithm::Sha1,
                        "SHA256" => Algorithm::Sha256,
                        "SHA512" => Algorithm::Sha512,
                        _ => return Err("the otpauth:// URI names an unknown algorithm".into()),
                    })
                }
                "digits" => {
                    spec.digits = Some(
                        value
                            .parse()
                            .map_err(|_| "the otpauth:// URI has bad digits")?,
                    )
                }
                "period" => {
                    spec.period = Some(
                        value
                            .parse()
                            .map_err(|_| "the otpauth:// URI has a bad period")?,
                    )
                }
                _ => {}
            }
        }
        secret.ok_or("the otpauth:// URI has no secret parameter")?
    } else {
        text.to_string()
    };
    let normalized: String = encoded
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=' && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if normalized.is_empty() {
        return Err("the secret is empty".into());
    }
    spec.key = Secret::try_from_base32(&normalized)
        .map(|s| s.as_bytes().to_vec())
        .map_err(|_| "the secret is not valid base32")?;
    Ok(spec)
}

/// The RFC 6238 code for `key` at unix time `at`.
pub(crate) fn code(key: &[u8], algorithm: Algorithm, digits: u8, period: u64, at: u64) -> String {
    let hmac = match algorithm {
        Algorithm::Sha1 => Hmac::SHA1,
        Algorithm::Sha256 => Hmac::SHA256,
        Algorithm::Sha512 => Hmac::SHA512,
    };
    Builder::new()
        .with_algorithm(hmac)
        .with_digits(digits)
        .with_step_duration(period)
        .with_secret(key.to_vec())
        .build_noncompliant()
        .generate(at)
        .to_string()
}

/// `d1r2 totp`: the current code for `TOTP_SECRET` (given here as `secret`).
pub(crate) fn run(args: &TotpOptions, secret: Option<&str>) -> Result<Report> {
    let generator = Generator::new(&args.shape, secret)?;
    let (digits, period, algorithm) = (generator.digits, generator.period, generator.algorithm);
    let at = match args.at {
        Some(at) => at,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| crate::error::failed(format!("reading the clock: {e}")))?
            .as_secs(),
    };
    let token = generator.code(at);
    let mut report = Report::new("totp");
    report.output("token", &token);
    report.secret_outputs.push("token".into());
    report
        .row("Digits", digits)
        .row("Period", format!("{period} s"))
        .row("Algorithm", format!("{algorithm:?}").to_lowercase())
        .row("Valid for", format!("{} s", period - at % period));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B: 8-digit codes for its three seeds at its six times.
    #[test]
    fn rfc_6238_vectors() {
        let sha1 = b"12345678901234567890".to_vec();
        let sha256 = b"12345678901234567890123456789012".to_vec();
        let sha512 = b"1234567890123456789012345678901234567890123456789012345678901234".to_vec();
        let table: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (1111111111, "14050471", "67062674", "99943326"),
            (1234567890, "89005924", "91819424", "93441116"),
            (2000000000, "69279037", "90698825", "38618901"),
            (20000000000, "65353130", "77737706", "47863826"),
        ];
        for (at, c1, c256, c512) in table {
            assert_eq!(code(&sha1, Algorithm::Sha1, 8, 30, at), c1, "sha1 at {at}");
            assert_eq!(
                code(&sha256, Algorithm::Sha256, 8, 30, at),
                c256,
                "sha256 at {at}"
            );
            assert_eq!(
                code(&sha512, Algorithm::Sha512, 8, 30, at),
                c512,
                "sha512 at {at}"
            );
        }
    }

    #[test]
    fn secrets_table() {
        let hello = b"Hello!\xde\xad\xbe\xef".to_vec();
        for text in [
            "JBSWY3DPEHPK3PXP",
            "jbswy3dpehpk3pxp",
            "JBSW Y3DP EHPK 3PXP",
            "JBSWY3DPEHPK3PXP====",
            "otpauth://totp/app:me?secret=JBSWY3DPEHPK3PXP&issuer=app",
        ] {
            assert_eq!(parse_secret(text).unwrap().key, hello, "{text}");
        }
        let uri = parse_secret(
            "otpauth://totp/x?secret=JBSWY3DPEHPK3PXP&algorithm=SHA256&digits=8&period=60",
        )
        .unwrap();
        assert_eq!(
            (uri.algorithm, uri.digits, uri.period),
            (Some(Algorithm::Sha256), Some(8), Some(60))
        );
        for bad in [
            "",
            "not base32 !!",
            "otpauth://totp/x",
            "otpauth://totp/x?issuer=y",
        ] {
            let err = parse_secret(bad).unwrap_err();
            assert!(bad.is_empty() || !err.contains(bad), "{err}");
        }
    }

    #[test]
    fn run_uses_uri_defaults_and_hides_the_code_from_the_summary() {
        let args = TotpOptions {
            shape: TotpShape::default(),
            at: Some(59),
        };
        let uri = "otpauth://totp/x?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&digits=8";
        let report = run(&args, Some(uri)).unwrap();
        assert_eq!(report.outputs["token"], "94287082");
        assert_eq!(report.secret_outputs, vec!["token"]);
        assert!(!report.to_text().contains("94287082"));
        let err = run(&args, None).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
