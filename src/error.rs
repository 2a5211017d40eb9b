//! Exit codes from one [`Kind`] on the error.
//!
//! The contract gives three exit codes: 0 success, 1 the operation failed, 2 bad usage or bad
//! input. Every typed error implements [`Classify`] with an exhaustive `match`, so a new variant
//! or a new error type cannot reach a command without a decision: the command layer's [`Error`]
//! is built from a typed error only through its `kind()`, and a `?` on an error that does not
//! implement [`Classify`] does not compile. Errors that only travel as `anyhow::Error` (the
//! operations' plumbing: I/O, SQL, tasks) are failures, unless an [`Error`] marked as bad input
//! is in their chain.

use std::fmt;

/// What went wrong, as far as the exit code is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The user can fix it by changing what they typed or pointed at (exit code 2).
    BadInput,
    /// The operation failed on the way, after any retries (exit code 1).
    Failed,
}

impl Kind {
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::BadInput => 2,
            Kind::Failed => 1,
        }
    }
}

/// The [`Kind`] of each value of an error type. Implement it with a `match` that names every
/// variant (no `_` arm), so adding a variant asks which kind it is.
pub trait Classify {
    fn kind(&self) -> Kind;
}

/// The command layer's error: a cause with its chain of context, and the kind that decides the
/// exit code. `Display` is the outermost message; [`one_line`] gives the whole chain.
pub struct Error {
    kind: Kind,
    inner: anyhow::Error,
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn exit_code(&self) -> u8 {
        self.kind.exit_code()
    }

    /// The same error with `context` said first; the kind stays.
    pub fn context(self, context: impl fmt::Display + Send + Sync + 'static) -> Error {
        Error {
            kind: self.kind,
            inner: self.inner.context(context),
        }
    }

    /// A cause of this error of type `E`, if any: for details a failure carries beside its
    /// message, such as the partial report of [`crate::model::report::Failure`].
    pub fn downcast_ref<E: fmt::Display + fmt::Debug + Send + Sync + 'static>(&self) -> Option<&E> {
        self.inner.downcast_ref()
    }

    /// [`one_line`] of this error.
    pub fn one_line(&self) -> String {
        one_line(&self.inner)
    }
}

/// A refusal of what the user asked for (a missing file, an unknown backup id, a malformed
/// flag), not a failure while doing it. Its message is the one line on stderr.
pub(crate) fn bad_input(message: impl Into<String>) -> Error {
    Error {
        kind: Kind::BadInput,
        inner: anyhow::Error::msg(message.into()),
    }
}

impl<E> From<E> for Error
where
    E: Classify + std::error::Error + Send + Sync + 'static,
{
    fn from(err: E) -> Self {
        Error {
            kind: err.kind(),
            inner: anyhow::Error::new(err),
        }
    }
}

/// An `anyhow::Error` is bad input when a cause in its chain is, and a failure otherwise.
impl From<anyhow::Error> for Error {
    fn from(inner: anyhow::Error) -> Self {
        let bad = inner
            .chain()
            .any(|cause| kind_of_cause(cause) == Some(Kind::BadInput));
        Error {
            kind: if bad { Kind::BadInput } else { Kind::Failed },
            inner,
        }
    }
}

/// The kind of a cause inside an `anyhow::Error`: an [`Error`], or one of the typed errors the
/// operations pass through their `anyhow` plumbing (a source, store or API refusing mid-way).
/// Only these can be found once erased; a typed error is classified by the compiler wherever it
/// meets an [`Error`] directly.
fn kind_of_cause(cause: &(dyn std::error::Error + 'static)) -> Option<Kind> {
    macro_rules! first_kind {
        ($($typed:ty),*) => {
            $(if let Some(err) = cause.downcast_ref::<$typed>() {
                return Some(err.kind());
            })*
        };
    }
    first_kind!(
        Error,
        crate::source::SourceError,
        crate::format::repo::RepoError,
        crate::store::StoreError,
        crate::remote::cloudflare::ApiError,
        crate::ops::firewall::github::MetaError,
        crate::ops::firewall::lists::ListError
    );
    None
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({:?})", self.inner, self.kind)
    }
}

/// So an [`Error`] can pass through the operations' `anyhow` plumbing and keep its kind there.
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}

/// `context` and `with_context` on a result whose error becomes an [`Error`], keeping its kind.
pub(crate) trait Context<T> {
    fn context(self, context: impl fmt::Display + Send + Sync + 'static) -> Result<T>;
    fn with_context<C: fmt::Display + Send + Sync + 'static>(
        self,
        context: impl FnOnce() -> C,
    ) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl fmt::Display + Send + Sync + 'static) -> Result<T> {
        self.map_err(|e| e.into().context(context))
    }

    fn with_context<C: fmt::Display + Send + Sync + 'static>(
        self,
        context: impl FnOnce() -> C,
    ) -> Result<T> {
        self.map_err(|e| e.into().context(context()))
    }
}

/// A task that panicked or was cancelled: the operation failed.
impl Classify for tokio::task::JoinError {
    fn kind(&self) -> Kind {
        Kind::Failed
    }
}

/// A report or record that does not serialize: the operation failed.
impl Classify for serde_json::Error {
    fn kind(&self) -> Kind {
        Kind::Failed
    }
}

/// One line for stderr: the whole chain of causes, outermost first, without repeating a cause
/// that an outer message already contains.
pub(crate) fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("typed {0:?}")]
    struct Typed(Kind);

    impl Classify for Typed {
        fn kind(&self) -> Kind {
            self.0
        }
    }

    #[test]
    fn kinds_are_exit_codes() {
        assert_eq!(Kind::BadInput.exit_code(), 2);
        assert_eq!(Kind::Failed.exit_code(), 1);
    }

    #[test]
    fn the_kind_survives_context_and_anyhow() {
        let bad = || bad_input("no such file");
        let failed = || Error::from(anyhow::anyhow!("upload failed"));
        let cases: Vec<(&str, Error, Kind, &str)> = vec![
            ("bad input", bad(), Kind::BadInput, "no such file"),
            (
                "bad input with context",
                bad().context("opening source"),
                Kind::BadInput,
                "opening source: no such file",
            ),
            (
                "bad input through anyhow with context",
                Error::from(anyhow::Error::new(bad()).context("opening source")),
                Kind::BadInput,
                "opening source: no such file",
            ),
            ("bare anyhow", failed(), Kind::Failed, "upload failed"),
            (
                "failure with context",
                failed().context("backup"),
                Kind::Failed,
                "backup: upload failed",
            ),
            (
                "typed bad input",
                Typed(Kind::BadInput).into(),
                Kind::BadInput,
                "typed BadInput",
            ),
            (
                "typed failure with context",
                Err::<(), _>(Typed(Kind::Failed)).context("x").unwrap_err(),
                Kind::Failed,
                "x: typed Failed",
            ),
            (
                "typed bad input with lazy context",
                Err::<(), _>(Typed(Kind::BadInput))
                    .with_context(|| "y")
                    .unwrap_err(),
                Kind::BadInput,
                "y: typed BadInput",
            ),
            (
                "an unlisted typed error hidden in anyhow is a failure",
                Error::from(anyhow::Error::new(Typed(Kind::BadInput))),
                Kind::Failed,
                "typed BadInput",
            ),
        ];
        for (name, err, kind, line) in cases {
            assert_eq!(err.kind(), kind, "{name}");
            assert_eq!(err.exit_code(), kind.exit_code(), "{name}");
            assert_eq!(err.one_line(), line, "{name}");
        }
    }

    fn api(status: u16) -> crate::remote::cloudflare::ApiError {
        crate::remote::cloudflare::ApiError::Status {
            what: "querying".into(),
            status,
            detail: "x".into(),
            retry_after: None,
        }
    }

    #[test]
    fn every_module_error_has_its_kind() {
        use crate::format::envelope::EnvelopeError;
        use crate::format::load::KeyCheckError;
        use crate::format::repo::RepoError;
        use crate::ops::firewall::github::MetaError;
        use crate::ops::firewall::lists::ListError;
        use crate::remote::cloudflare::ApiError;
        use crate::source::SourceError;
        use crate::store::StoreError;
        use Kind::{BadInput, Failed};
        let s = String::from;
        let io = || std::io::Error::other("disk");
        let store = |kind| match kind {
            BadInput => StoreError::MissingRoot { store: s("dir") },
            Failed => StoreError::NotFound {
                store: s("dir"),
                key: s("k"),
            },
        };
        let cases: Vec<(Error, Kind)> = vec![
            (
                ApiError::MissingToken("CLOUDFLARE_API_TOKEN").into(),
                BadInput,
            ),
            (
                ApiError::MissingAccount("CLOUDFLARE_ACCOUNT_ID").into(),
                BadInput,
            ),
            (ApiError::BadSetting("D1R2_ATTEMPTS").into(), BadInput),
            (api(400).into(), BadInput),
            (api(403).into(), BadInput),
            (api(404).into(), BadInput),
            (api(408).into(), Failed),
            (api(429).into(), Failed),
            (api(500).into(), Failed),
            (api(503).into(), Failed),
            (
                ApiError::Transport {
                    what: s("x"),
                    message: s("reset"),
                }
                .into(),
                Failed,
            ),
            (
                ApiError::Decode {
                    what: s("x"),
                    message: s("eof"),
                }
                .into(),
                Failed,
            ),
            (SourceError::Missing(s("db")).into(), BadInput),
            (SourceError::NotADatabase(s("db")).into(), BadInput),
            (SourceError::UnknownTable(s("t")).into(), BadInput),
            (SourceError::BadColumn(s("t.c")).into(), BadInput),
            (SourceError::Api(api(404)).into(), BadInput),
            (SourceError::Api(api(503)).into(), Failed),
            (SourceError::Catalog(s("x")).into(), Failed),
            (
                SourceError::Sqlite {
                    path: s("db"),
                    source: rusqlite::Error::QueryReturnedNoRows,
                }
                .into(),
                Failed,
            ),
            (SourceError::Other(s("x")).into(), Failed),
            (StoreError::MissingRoot { store: s("dir") }.into(), BadInput),
            (StoreError::InvalidKey(s("../x")).into(), BadInput),
            (store(Failed).into(), Failed),
            (
                StoreError::Io {
                    op: "reading",
                    store: s("dir"),
                    key: s("k"),
                    source: io(),
                }
                .into(),
                Failed,
            ),
            (
                StoreError::Remote {
                    op: "reading",
                    store: s("bucket"),
                    key: s("k"),
                    message: s("500"),
                }
                .into(),
                Failed,
            ),
            (RepoError::NoBackups { store: s("dir") }.into(), BadInput),
            (
                RepoError::UnknownBackup {
                    id: s("1"),
                    store: s("dir"),
                }
                .into(),
                BadInput,
            ),
            (
                RepoError::Incomplete {
                    id: s("1"),
                    store: s("dir"),
                }
                .into(),
                BadInput,
            ),
            (RepoError::Store(store(BadInput)).into(), BadInput),
            (RepoError::Store(store(Failed)).into(), Failed),
            (
                RepoError::Manifest(EnvelopeError::Unreadable {
                    id: s("1"),
                    reason: s("x"),
                })
                .into(),
                Failed,
            ),
            (
                EnvelopeError::NewerFormat {
                    id: s("1"),
                    format: 9,
                }
                .into(),
                Failed,
            ),
            (
                EnvelopeError::Moved {
                    id: s("1"),
                    named: s("2"),
                }
                .into(),
                Failed,
            ),
            (
                EnvelopeError::Unauthentic {
                    id: s("1"),
                    fingerprint: s("f"),
                }
                .into(),
                Failed,
            ),
            (
                EnvelopeError::Altered {
                    id: s("1"),
                    field: "label",
                }
                .into(),
                Failed,
            ),
            (EnvelopeError::NeedsKey { id: s("1") }.into(), Failed),
            (KeyCheckError::Missing { id: s("1") }.into(), BadInput),
            (
                KeyCheckError::Wrong {
                    id: s("1"),
                    expected: s("a"),
                    actual: s("b"),
                }
                .into(),
                BadInput,
            ),
            (KeyCheckError::Unencrypted { id: s("1") }.into(), Failed),
            (MetaError::UnknownSection(s("nope")).into(), BadInput),
            (MetaError::MissingSection(s("hooks")).into(), Failed),
            (
                MetaError::NotAList {
                    section: s("hooks"),
                    value: s("1"),
                }
                .into(),
                Failed,
            ),
            (MetaError::Api(s("x")).into(), Failed),
            (
                MetaError::RateLimited {
                    status: 403,
                    signal: "x-ratelimit-remaining: 0",
                    wait: 60,
                    attempts: 3,
                    beyond: true,
                    deadline: 30,
                    advice: "set GITHUB_TOKEN",
                }
                .into(),
                Failed,
            ),
            (ListError::Api(api(404)).into(), BadInput),
            (ListError::Api(api(503)).into(), Failed),
            (
                ListError::WrongKind {
                    name: s("l"),
                    kind: s("asn"),
                }
                .into(),
                BadInput,
            ),
            (
                ListError::OperationFailed {
                    id: s("1"),
                    name: s("l"),
                    error: s("x"),
                }
                .into(),
                Failed,
            ),
            (
                ListError::OperationTimedOut {
                    id: s("1"),
                    name: s("l"),
                    secs: 60,
                }
                .into(),
                Failed,
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(err.kind(), kind, "{err}");
        }
    }

    /// The operations pass typed errors through `anyhow`: a refusal there keeps exit code 2.
    #[test]
    fn typed_errors_inside_anyhow_keep_their_kind() {
        use crate::source::SourceError;
        use crate::store::StoreError;
        let through = |err: anyhow::Error| Error::from(err.context("backing up db"));
        let cases = [
            (
                through(SourceError::UnknownTable("t".into()).into()),
                Kind::BadInput,
            ),
            (through(SourceError::Api(api(403)).into()), Kind::BadInput),
            (through(SourceError::Api(api(503)).into()), Kind::Failed),
            (
                through(
                    StoreError::NotFound {
                        store: "dir".into(),
                        key: "k".into(),
                    }
                    .into(),
                ),
                Kind::Failed,
            ),
            (
                through(
                    crate::format::repo::RepoError::NoBackups {
                        store: "dir".into(),
                    }
                    .into(),
                ),
                Kind::BadInput,
            ),
            (
                through(crate::ops::firewall::github::MetaError::UnknownSection("x".into()).into()),
                Kind::BadInput,
            ),
            (
                through(crate::ops::firewall::lists::ListError::Api(api(404)).into()),
                Kind::BadInput,
            ),
            (
                through(crate::remote::cloudflare::ApiError::MissingToken("T").into()),
                Kind::BadInput,
            ),
            (
                through(anyhow::Error::new(std::io::Error::other("disk"))),
                Kind::Failed,
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(err.kind(), kind, "{err:?}");
        }
    }

    #[test]
    fn one_line_skips_causes_already_said() {
        let inner = std::io::Error::other("disk full");
        let err = anyhow::Error::new(inner).context("writing part: disk full");
        assert_eq!(one_line(&err), "writing part: disk full");
    }
}
