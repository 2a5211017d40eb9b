//! What leaves the process is sanitised here, by one set of rules, whatever wrote it.
//!
//! d1r2 prints and stores text that others wrote: answers of remote services (a proxy or a
//! misconfigured endpoint may copy our request headers into its error page), labels and audit
//! records read back from a store (anyone who can write to the bucket wrote them), and its own
//! messages, which quote URLs the user configured. The exits (the error line, log lines, job
//! outputs, the step summary, annotations, audit records, check runs, `list`) pass their text
//! through [`text`], so a rule added here holds for all of them:
//!
//! - the values of the secret variables the process was started with ([`SECRET_VARIABLES`],
//!   registered once by the command layer) and codes it made from them, with their common
//!   encodings (percent-encoded, base64 at any alignment, the other text form of a key's bytes);
//! - the userinfo and the query of any URL;
//! - credentials that have a recognisable shape whoever they belong to: SigV4's `Credential=`
//!   access key id, `Bearer`/`Basic` authorization values, GitHub and AWS key formats.
//!
//! Beside it, [`remote_body`] bounds and flattens text a remote service sent, [`controls`]
//! makes control characters (terminal escape sequences) visible instead of acting on a terminal,
//! [`commands`] stops a line from starting a GitHub workflow command, and [`command_data`]
//! escapes a workflow command's data as GitHub's toolkit does.

use std::collections::BTreeMap;
use std::sync::RwLock;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// What a redacted secret is replaced with.
pub(crate) const REDACTED: &str = "[redacted]";

/// The environment variables that hold secrets: the tool's own and the ones the AWS SDK reads,
/// and the heartbeat URL (anyone holding it can report a success), as a variable and as the
/// action's input.
pub(crate) const SECRET_VARIABLES: [&str; 11] = [
    "CLOUDFLARE_API_TOKEN",
    "R2_ACCESS_KEY_ID",
    "R2_SECRET_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "D1R2_ENCRYPTION_KEY",
    "TOTP_SECRET",
    "GITHUB_TOKEN",
    "D1R2_HEARTBEAT_URL",
    "INPUT_HEARTBEAT-URL",
];

/// A value shorter than this is not redacted as it stands: a three-letter "secret" would cut
/// holes in every message. A 6-digit TOTP code is the shortest secret d1r2 handles.
const MIN_SECRET: usize = 6;

/// The known secret values of this process and their encodings. Filled at start, read by
/// every exit; a value is only ever added.
static KNOWN: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Whether this process handles an encrypted backup: its records stored in plain then name no
/// table (see [`withhold_names`]).
static NAMES_WITHHELD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Registers the values of [`SECRET_VARIABLES`] in `env` (each line of a multi-line value too).
pub(crate) fn register_env(env: &BTreeMap<String, String>) {
    for name in SECRET_VARIABLES {
        if let Some(value) = env.get(name) {
            register(value);
        }
    }
}

/// Registers a secret value: from now on [`text`] redacts it and its encodings.
pub(crate) fn register(value: &str) {
    let mut needles = needles(value);
    if needles.is_empty() {
        return;
    }
    let mut known = KNOWN.write().unwrap_or_else(|e| e.into_inner());
    needles.retain(|n| !known.contains(n));
    known.extend(needles);
}

/// Marks this process as one that handles an encrypted backup, whose table names are as
/// private as its rows: an audit record, stored in plain beside the backup, then carries no
/// detail of a failure.
pub(crate) fn withhold_names() {
    NAMES_WITHHELD.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Whether [`withhold_names`] was called.
pub(crate) fn names_withheld() -> bool {
    NAMES_WITHHELD.load(std::sync::atomic::Ordering::SeqCst)
}

/// `text` with every registered secret and every credential-shaped part redacted.
pub(crate) fn text(text: &str) -> String {
    let known = KNOWN.read().unwrap_or_else(|e| e.into_inner());
    with(&known, text)
}

/// `text` with the `known` secret strings and every credential-shaped part redacted: the pure
/// rule behind [`text`].
///
/// Every rule finds its spans in the same original text and the spans are replaced together: a
/// rule applied to another rule's output could miss the rest of a secret the first one cut.
pub(crate) fn with(known: &[String], text: &str) -> String {
    let mut spans = known_values(known, text);
    spans.extend(urls(text));
    spans.extend(after_marker(text, "Credential=", is_credential_end, 1));
    spans.extend(after_marker(text, "credential=", is_credential_end, 1));
    spans.extend(after_marker(text, "Bearer ", is_token_end, 1));
    spans.extend(after_marker(text, "Basic ", is_token_end, 8));
    spans.extend(token_shapes(text));
    replace_spans(text, spans)
}

/// The strings that betray `value`: the value (and each of its lines), percent-encoded, its
/// base64 at each of the three alignments it can have inside a longer encoded string, and,
/// for a value that is hex or base64 of at least 16 bytes (an encryption key), the other form
/// of the same bytes. Shorter than [`MIN_SECRET`]: none.
pub(crate) fn needles(value: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let parts = std::iter::once(value.trim()).chain(value.lines().map(str::trim));
    for part in parts.filter(|p| p.len() >= MIN_SECRET) {
        let mut add = |s: String| {
            if s.len() >= MIN_SECRET && !out.contains(&s) {
                out.push(s);
            }
        };
        add(part.to_string());
        add(percent_encode(part, true));
        add(percent_encode(part, false));
        for fragment in base64_fragments(part.as_bytes()) {
            add(fragment);
        }
        for other in other_forms(part) {
            add(other);
        }
    }
    out
}

/// Every byte but RFC 3986's unreserved ones as `%XX`, in upper or lower case hex.
fn percent_encode(value: &str, upper: bool) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else if upper {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// The base64 characters that depend on `bytes` alone, for each alignment (0, 1 or 2 bytes
/// before them in a longer encoded string) and both alphabets: an `Authorization: Basic`
/// value holds a token after `user:`, at whatever offset that puts it.
fn base64_fragments(bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for shift in 0..3usize {
        let mut shifted = vec![0u8; shift];
        shifted.extend_from_slice(bytes);
        let start = (8 * shift).div_ceil(6);
        let end = 8 * (shift + bytes.len()) / 6;
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(&shifted);
            if end > start {
                out.push(encoded[start..end].to_string());
            }
        }
    }
    out
}

/// The other text forms of a value that is the hex or base64 of 16 bytes or more: a key given
/// as hex may be echoed as base64 and the reverse.
fn other_forms(value: &str) -> Vec<String> {
    let decoded = hex::decode(value).ok().or_else(|| {
        base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT
            .decode(value)
            .ok()
            .or_else(|| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(value.trim_end_matches('='))
                    .ok()
            })
    });
    let Some(bytes) = decoded.filter(|b| b.len() >= 16) else {
        return Vec::new();
    };
    let mut out = vec![hex::encode(&bytes), hex::encode_upper(&bytes)];
    out.extend(base64_fragments(&bytes));
    out
}

/// Every occurrence of each of `known` in `text`, overlapping ones too, so no occurrence
/// survives in part.
fn known_values(known: &[String], text: &str) -> Vec<Span> {
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for needle in known.iter().filter(|n| !n.is_empty()) {
        let mut from = 0;
        while let Some(at) = text[from..].find(needle.as_str()) {
            let start = from + at;
            spans.push((start, start + needle.len()));
            from = start + text[start..].chars().next().map_or(1, char::len_utf8);
        }
    }
    spans
}

/// A byte range of a text, to be redacted.
type Span = (usize, usize);

/// `text` with the byte ranges of `spans` (in any order, overlapping or not) replaced by
/// [`REDACTED`], one marker per merged range.
fn replace_spans(text: &str, mut spans: Vec<Span>) -> String {
    if spans.is_empty() {
        return text.to_string();
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let mut current: Option<(usize, usize)> = None;
    for (start, end) in spans {
        match current {
            Some((s, e)) if start <= e => current = Some((s, e.max(end))),
            Some((s, e)) => {
                out.push_str(&text[at..s]);
                out.push_str(REDACTED);
                at = e;
                current = Some((start, end));
            }
            None => current = Some((start, end)),
        }
    }
    if let Some((s, e)) = current {
        out.push_str(&text[at..s]);
        out.push_str(REDACTED);
        at = e;
    }
    out.push_str(&text[at..]);
    out
}

/// Where a URL written in running text ends.
fn is_url_end(c: char) -> bool {
    c.is_whitespace() || c.is_control() || "\"'<>`\\{}|^".contains(c)
}

/// The userinfo (`user:password@`) and the query (`?...`) of every URL in `text`.
/// A userinfo is what comes before the last `@` that precedes the query, when it is in the
/// authority or holds a `:` (a password with an unescaped `/` ends the authority early, and
/// must still go).
fn urls(text: &str) -> Vec<Span> {
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("://") {
        let scheme_end = from + at;
        let rest = scheme_end + 3;
        from = rest;
        let scheme_ok = text[..scheme_end]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric());
        if !scheme_ok {
            continue;
        }
        let len = text[rest..].find(is_url_end).unwrap_or(text.len() - rest);
        let url = &text[rest..rest + len];
        let before_query = url.find(['?', '#']).unwrap_or(url.len());
        if let Some(at) = url[..before_query].rfind('@') {
            let authority_end = url.find(['/', '?', '#']).unwrap_or(url.len());
            if at < authority_end || url[..at].contains(':') {
                spans.push((rest, rest + at));
            }
        }
        if let Some(q) = url.find('?') {
            let end = url[q..].find('#').map_or(url.len(), |h| q + h);
            if end > q + 1 {
                spans.push((rest + q + 1, rest + end));
            }
        }
        from = rest + len;
    }
    spans
}

/// Where a SigV4 access key id ends: at the `/` before the date, or at anything that cannot
/// be part of it.
fn is_credential_end(c: char) -> bool {
    !(c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Where an authorization token ends.
fn is_token_end(c: char) -> bool {
    !(c.is_ascii_alphanumeric() || "-._~+/=".contains(c))
}

/// What follows each `marker` in `text` (up to `end`), when it is at least `min_len`
/// characters long.
fn after_marker(text: &str, marker: &str, end: fn(char) -> bool, min_len: usize) -> Vec<Span> {
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(marker) {
        let start = from + at + marker.len();
        let len = text[start..].find(end).unwrap_or(text.len() - start);
        let value = &text[start..start + len];
        if value.chars().count() >= min_len {
            spans.push((start, start + len));
        }
        from = start + len;
    }
    spans
}

/// The credentials in `text` recognisable by their shape: GitHub tokens (`ghp_`, `gho_`, `ghu_`, `ghs_`,
/// `ghr_`, `github_pat_`) and AWS access key ids (`AKIA`, `ASIA` and 16 more).
fn token_shapes(text: &str) -> Vec<Span> {
    let mut spans = Vec::new();
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        // Word bytes are ASCII, so a word starts and ends on character boundaries.
        let starts_word = word(bytes[i]) && (i == 0 || !word(bytes[i - 1]));
        if starts_word {
            let end = (i..bytes.len())
                .find(|&j| !word(bytes[j]))
                .unwrap_or(bytes.len());
            if is_token_shape(&text[i..end]) {
                spans.push((i, end));
            }
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    spans
}

/// Whether a word has the shape of a GitHub token or an AWS access key id.
fn is_token_shape(word: &str) -> bool {
    let github = ["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"]
        .iter()
        .any(|p| word.strip_prefix(p).is_some_and(|rest| rest.len() >= 20));
    let aws = ["AKIA", "ASIA"].iter().any(|p| {
        word.strip_prefix(p).is_some_and(|rest| {
            rest.len() == 16
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        })
    });
    github || aws
}

/// Text a remote service answered, fit to quote in one message line: secrets redacted first
/// (a cut could otherwise leave half a token no rule recognises), control characters and line
/// ends turned into spaces, runs of spaces squeezed, and at most `limit` characters kept.
pub(crate) fn remote_body(body: &str, limit: usize) -> String {
    let redacted = text(body);
    let flat: String = redacted
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let squeezed = flat.split_whitespace().collect::<Vec<_>>().join(" ");
    if squeezed.chars().count() > limit {
        let mut cut: String = squeezed.chars().take(limit).collect();
        cut.push('…');
        cut
    } else {
        squeezed
    }
}

/// Whether a character would act on a terminal or reorder what it shows: control characters
/// (C0 but line ends and tabs, DEL, C1, whose 0x9B is an 8-bit escape) and the bidirectional
/// overrides and isolates.
fn is_active(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// `text` with each character that would act on a terminal written out as `\u{..}`, so stored
/// text (a label, an audit record) shows what it holds instead of moving the cursor, recolouring
/// or retitling the terminal, or ending a line.
pub(crate) fn controls(text: &str) -> String {
    escape_active(text, |c| format!("\\u{{{:x}}}", c as u32))
}

/// [`controls`] for JSON text: serde_json escapes C0 itself but writes DEL, C1 and the
/// bidirectional controls raw; they become `\uXXXX` escapes, which JSON reads back as the same
/// characters.
pub(crate) fn json_controls(text: &str) -> String {
    escape_active(text, |c| format!("\\u{:04x}", c as u32))
}

fn escape_active(text: &str, escape: impl Fn(char) -> String) -> String {
    if !text.chars().any(is_active) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if is_active(c) {
                escape(c)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `text` with no line that a GitHub runner would take for a workflow command: a line that
/// starts with `::` after spaces, or holds `##[` anywhere (the older syntax), gets a zero-width
/// space between the two characters, so it reads the same in the log and does nothing. A lone
/// CR ends a line too: the runner reads its output with .NET's `ReadLine`.
pub(crate) fn commands(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive(['\n', '\r']) {
        let indent = line.len() - line.trim_start().len();
        if line[indent..].starts_with("::") {
            out.push_str(&line[..indent]);
            out.push_str(":\u{200b}");
            out.push_str(&line[indent + 1..].replace("##[", "#\u{200b}#["));
        } else {
            out.push_str(&line.replace("##[", "#\u{200b}#["));
        }
    }
    out
}

/// The data of a workflow command (`::add-mask::DATA`, `::error::DATA`), escaped as GitHub's
/// toolkit escapes it (`%` first, then CR and LF), so the runner reads back exactly `data`.
pub(crate) fn command_data(data: &str) -> String {
    data.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// What SQLite said, fit for a message that leaves the process: its own message when it quotes
/// nothing, else its result code's description. A syntax error's message quotes the statement's
/// token (`near "...": syntax error`) and rusqlite's `SqlInputError` carries the whole
/// statement: a statement d1r2 runs holds a backup's values (a page's last key, a row).
pub(crate) fn sqlite(err: &rusqlite::Error) -> String {
    use rusqlite::Error::{SqlInputError, SqliteFailure};
    match err {
        SqliteFailure(_, Some(m)) if !m.contains(['"', '\'', '`', '[']) => m.clone(),
        SqliteFailure(code, _) | SqlInputError { error: code, .. } => sqlite_code(code),
        other => other.to_string(),
    }
}

/// The description of a SQLite result code (`database or disk is full`): names no table,
/// column or value.
pub(crate) fn sqlite_code(code: &rusqlite::ffi::Error) -> String {
    rusqlite::ffi::code_to_str(code.extended_code).to_string()
}

/// Whether the process runs inside a GitHub Actions job, as an action or in a `run:` step: its
/// stdout and stderr are then read for workflow commands.
pub(crate) fn in_github_actions(env: &BTreeMap<String, String>) -> bool {
    env.get("GITHUB_ACTIONS").is_some_and(|v| v == "true")
}

/// A line or block about to be printed: secrets redacted, terminal controls made visible, and
/// (`actions`) no line able to start a workflow command.
pub(crate) fn printed(text: &str, actions: bool) -> String {
    let safe = controls(&self::text(text));
    if actions { commands(&safe) } else { safe }
}

#[cfg(test)]
mod tests;
