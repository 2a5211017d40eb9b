use super::*;

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use proptest::prelude::*;

fn known(values: &[&str]) -> Vec<String> {
    values.iter().flat_map(|v| needles(v)).collect()
}

#[test]
fn known_values_and_their_encodings_are_redacted() {
    let secret = "s3cr3t/t0k+n=with spaces";
    let k = known(&[secret]);
    let basic = STANDARD.encode(format!("user:{secret}"));
    let cases = [
        (format!("token {secret}!"), "token [redacted]!"),
        (
            "q=s3cr3t%2Ft0k%2Bn%3Dwith%20spaces&x=1".to_string(),
            "q=[redacted]&x=1",
        ),
        (
            "q=s3cr3t%2ft0k%2bn%3dwith%20spaces".to_string(),
            "q=[redacted]",
        ),
        (
            format!("b64 {} end", STANDARD.encode(secret)),
            "b64 [redacted] end",
        ),
        (
            format!("b64 {} end", URL_SAFE.encode(secret)),
            "b64 [redacted] end",
        ),
        (format!("{secret}{secret}"), "[redacted]"),
    ];
    for (input, want) in cases {
        let got = with(&k, &input);
        // A padded encoding may keep a character or two that also depend on what follows.
        assert!(
            got == want || got.starts_with(want.trim_end_matches(" end")),
            "{input:?} -> {got:?}, want {want:?}"
        );
        assert!(!got.contains(secret), "{input:?} -> {got:?}");
    }
    let got = with(&k, &format!("authorization: Basic {basic}"));
    assert_eq!(got, "authorization: Basic [redacted]");
}

#[test]
fn a_key_is_redacted_in_its_other_form() {
    let hex_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let bytes = hex::decode(hex_key).unwrap();
    let k = known(&[hex_key]);
    let as_base64 = STANDARD.encode(&bytes);
    assert!(!with(&k, &as_base64).contains(&as_base64[..40]));
    let k = known(&[&as_base64]);
    assert_eq!(with(&k, &format!("key {hex_key}")), "key [redacted]");
    assert_eq!(
        with(&k, &format!("key {}", hex_key.to_uppercase())),
        "key [redacted]"
    );
}

#[test]
fn short_values_are_not_redacted() {
    assert!(needles("abc").is_empty());
    assert!(needles("  \n ").is_empty());
    assert_eq!(with(&known(&["abc"]), "abcabc"), "abcabc");
}

#[test]
fn each_line_of_a_multi_line_secret_is_redacted() {
    let k = known(&["first-line-secret\nsecond-line-secret"]);
    assert_eq!(
        with(&k, "a second-line-secret b"),
        "a [redacted] b",
        "{k:?}"
    );
}

#[test]
fn overlapping_secrets_are_both_gone() {
    let k = known(&["abcdef123", "123xyz7890"]);
    assert_eq!(with(&k, "<abcdef123xyz7890>"), "<[redacted]>");
    // One secret overlapping itself: no tail of it is left.
    assert_eq!(with(&known(&["abcabc"]), "abcabcabc!"), "[redacted]!");
}

#[test]
fn credential_shapes_are_redacted_whoever_they_belong_to() {
    let cases = [
        (
            "Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE123/20261205/auto/s3/aws4_request, SignedHeaders=host",
            "Authorization: AWS4-HMAC-SHA256 Credential=[redacted]/20261205/auto/s3/aws4_request, SignedHeaders=host",
        ),
        (
            "X-Amz-Credential=someid%2F20261205",
            "X-Amz-Credential=[redacted]%2F20261205",
        ),
        (
            "authorization: Bearer abc.def-ghi_jkl",
            "authorization: Bearer [redacted]",
        ),
        ("Basic auth", "Basic auth"),
        ("Basic dXNlcjpwYXNzd29yZA==", "Basic [redacted]"),
        (
            "token ghp_0123456789abcdefghijABCDEFGHIJ in it",
            "token [redacted] in it",
        ),
        (
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstu",
            "[redacted]",
        ),
        ("id AKIAIOSFODNN7EXAMPLE.", "id [redacted]."),
        ("AKIA is a prefix", "AKIA is a prefix"),
    ];
    for (input, want) in cases {
        assert_eq!(with(&[], input), want, "{input:?}");
    }
}

#[test]
fn urls_lose_their_userinfo_and_query() {
    let cases = [
        (
            "https://user:pass@example.com/a?b=c#d",
            "https://[redacted]@example.com/a?[redacted]#d",
        ),
        ("http://tok@host:8080/x", "http://[redacted]@host:8080/x"),
        (
            "GITHUB_API_URL \"https://u:pa/ss@h.example\": bad",
            "GITHUB_API_URL \"https://[redacted]@h.example\": bad",
        ),
        (
            "see https://example.com/a/b.",
            "see https://example.com/a/b.",
        ),
        ("https://example.com/?", "https://example.com/?"),
        (
            "PUT https://up.example/k?X-Amz-Signature=ab&X-Amz-Credential=id failed",
            "PUT https://up.example/k?[redacted] failed",
        ),
        ("no url :// here", "no url :// here"),
        (
            "two https://a:b@x/ and s3://c:d@y/?e",
            "two https://[redacted]@x/ and s3://[redacted]@y/?[redacted]",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(with(&[], input), want, "{input:?}");
    }
}

#[test]
fn remote_bodies_are_flat_and_bounded() {
    assert_eq!(remote_body("a\n\r\tb\u{1b}[31m  c", 100), "a b [31m c");
    assert_eq!(remote_body("abcdef", 3), "abc…");
    assert_eq!(remote_body("", 3), "");
}

#[test]
fn controls_are_shown_not_acted_on() {
    assert_eq!(controls("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
    assert_eq!(controls("l1\nl2\tx"), "l1\nl2\tx");
    assert_eq!(
        controls("\r\u{7f}\u{9b}\u{202e}"),
        "\\u{d}\\u{7f}\\u{9b}\\u{202e}"
    );
    assert_eq!(json_controls("\u{9b}\u{2067}"), "\\u009b\\u2067");
    let json = format!("\"{}\"", json_controls("x\u{9b}\u{202e}y"));
    let back: String = serde_json::from_str(&json).unwrap();
    assert_eq!(back, "x\u{9b}\u{202e}y");
}

#[test]
fn no_line_starts_a_workflow_command() {
    let cases = [
        ("::set-output name=x::y", ":\u{200b}:set-output name=x::y"),
        (
            "label\n  ::stop-commands::t\nok",
            "label\n  :\u{200b}:stop-commands::t\nok",
        ),
        ("a ##[error]b", "a #\u{200b}#[error]b"),
        ("ok :: not at the start", "ok :: not at the start"),
        ("\t::warning::x\n", "\t:\u{200b}:warning::x\n"),
        ("a\r::error::b", "a\r:\u{200b}:error::b"),
    ];
    for (input, want) in cases {
        let got = commands(input);
        assert_eq!(got, want, "{input:?}");
        for line in got.split(['\n', '\r']) {
            assert!(!line.trim_start().starts_with("::"), "{line:?}");
            assert!(!line.contains("##["), "{line:?}");
        }
    }
}

#[test]
fn command_data_is_escaped_as_the_toolkit_does() {
    for (input, want) in [
        ("a%0Ab", "a%250Ab"),
        ("x\r\ny", "x%0D%0Ay"),
        ("100%", "100%25"),
        ("plain", "plain"),
    ] {
        assert_eq!(command_data(input), want);
    }
}

fn secret() -> impl Strategy<Value = String> {
    // Printable ASCII, as tokens and keys are, with the characters encodings change.
    proptest::string::string_regex("[ -~]{6,40}")
        .unwrap()
        .prop_filter("not blank", |s| s.trim().len() >= MIN_SECRET)
}

/// How a secret may be written out by someone else: as it is, percent-encoded, base64 (alone,
/// or after 1 to 3 other bytes, as in a `user:token` pair, at each alignment), as a header.
fn encode(secret: &str, how: u8) -> String {
    match how % 9 {
        0 => secret.to_string(),
        1 => percent_encode(secret, true),
        2 => percent_encode(secret, false),
        3 => STANDARD.encode(secret),
        4 => URL_SAFE.encode(secret),
        5 => format!("Bearer {secret}"),
        n => STANDARD.encode(format!("{}{secret}", &"u::"[..usize::from(n - 5)])),
    }
}

/// Whether some run of base64 characters in `text`, read from any of its first four
/// characters, decodes to bytes that hold `secret`.
fn decodes_to(text: &str, secret: &str) -> bool {
    let is_b64 = |c: char| c.is_ascii_alphanumeric() || "+/-_".contains(c);
    text.split(|c| !is_b64(c)).any(|run| {
        (0..4.min(run.len())).any(|skip| {
            let run = &run[skip..];
            let whole = &run[..run.len() / 4 * 4];
            [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD].iter().any(|engine| {
                engine
                    .decode(whole)
                    .is_ok_and(|bytes| bytes.windows(secret.len()).any(|w| w == secret.as_bytes()))
            })
        })
    })
}

proptest! {
    #[test]
    fn no_secret_survives(
        secrets in proptest::collection::vec(secret(), 1..4),
        before in "[ -~\n…é€]{0,30}",
        after in "[ -~\n…é€]{0,30}",
        how in any::<u8>(),
        which in any::<prop::sample::Index>(),
    ) {
        let values: Vec<&str> = secrets.iter().map(|s| s.trim()).collect();
        let k = known(&values);
        let chosen = values[which.index(values.len())];
        let encoded = encode(chosen, how);
        let got = with(&k, &format!("{before}{encoded}{after}"));
        for value in &values {
            prop_assert!(!got.contains(value), "{value:?} in {got:?}");
        }
        // Nor does an encoded form: no base64 in the output decodes to it, no percent-encoding.
        for value in &values {
            prop_assert!(!decodes_to(&got, value), "{value:?} encoded in {got:?}");
            prop_assert!(!got.contains(&percent_encode(value, true)), "{got:?}");
            prop_assert!(!got.contains(&percent_encode(value, false)), "{got:?}");
        }
    }

    #[test]
    fn commands_never_start_a_line(text in "[ -~\n\r\t]{0,80}") {
        for line in commands(&text).split(['\n', '\r']) {
            prop_assert!(!line.trim_start().starts_with("::"));
            prop_assert!(!line.contains("##["));
        }
    }

    #[test]
    fn controls_leave_nothing_active(text in any::<String>()) {
        prop_assert!(!controls(&text).chars().any(is_active));
    }
}

#[test]
fn sqlite_messages_quote_no_statement() {
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    conn.execute_batch("CREATE TABLE t(a UNIQUE); INSERT INTO t VALUES('v-1');")
        .unwrap();
    let syntax = conn
        .execute_batch("SELECT * FROM t WHERE a > 'v-secret' 'x'")
        .unwrap_err();
    let prepared = conn
        .prepare("SELECT * FROM t WHERE a > 'v-secret' 'x'")
        .unwrap_err();
    let unique = conn
        .execute_batch("INSERT INTO t VALUES('v-1')")
        .unwrap_err();
    for (err, want) in [
        (&syntax, "SQL logic error"),
        (&prepared, "SQL logic error"),
        (&unique, "UNIQUE constraint failed: t.a"),
        (
            &rusqlite::Error::QueryReturnedNoRows,
            "Query returned no rows",
        ),
    ] {
        assert_eq!(sqlite(err), want, "{err}");
    }
}
