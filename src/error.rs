//! Exit codes from one [`Kind`] on the error.
//!
//! The contract gives three exit codes: 0 success, 1 the operation failed, 2 bad usage or bad
//! input. Every typed error implements [`Classify`] with an exhaustive `match`, and an [`Error`]
//! is built from a typed error only through its `kind()`: a `?` on an error that does not
//! implement [`Classify`] does not compile, so a new variant or a new error type cannot reach a
//! command without a decision. The operations return [`Result`] as the commands do, so the kind
//! is settled where the error is made and carried through every context added on the way out,
//! never searched for afterwards.

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

    /// The outermost context said of this error, when one was added: the command's own words
    /// on what failed, without the cause.
    pub(crate) fn outermost_context(&self) -> Option<String> {
        (self.inner.chain().count() > 1).then(|| self.inner.to_string())
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

/// A failure of the operation itself, with no typed cause: what ran out or did not add up.
pub(crate) fn failed(message: impl Into<String>) -> Error {
    Error {
        kind: Kind::Failed,
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

/// So a caller of the library can put an [`Error`] behind `?` in its own error type.
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

/// A file or socket that failed under the operation: the operation failed. A path the user
/// named is checked first, and refused as bad input with its own message.
impl Classify for std::io::Error {
    fn kind(&self) -> Kind {
        Kind::Failed
    }
}

/// SQLite failing under an operation (a scratch database, a restore target already opened):
/// the operation failed. A source that is not a database is refused by the source as bad input.
impl Classify for rusqlite::Error {
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
    fn the_kind_survives_context() {
        let bad = || bad_input("no such file");
        let fail = || failed("upload failed");
        let cases: Vec<(&str, Error, Kind, &str)> = vec![
            ("bad input", bad(), Kind::BadInput, "no such file"),
            (
                "bad input with context",
                bad().context("opening source"),
                Kind::BadInput,
                "opening source: no such file",
            ),
            (
                "bad input with two contexts",
                Err::<(), _>(bad())
                    .context("opening source")
                    .context("backing up db")
                    .unwrap_err(),
                Kind::BadInput,
                "backing up db: opening source: no such file",
            ),
            ("failure", fail(), Kind::Failed, "upload failed"),
            (
                "failure with context",
                fail().context("backup"),
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
                "plumbing is a failure",
                Err::<(), _>(std::io::Error::other("disk"))
                    .context("writing part")
                    .unwrap_err(),
                Kind::Failed,
                "writing part: disk",
            ),
        ];
        for (name, err, kind, line) in cases {
            assert_eq!(err.kind(), kind, "{name}");
            assert_eq!(err.exit_code(), kind.exit_code(), "{name}");
            assert_eq!(err.one_line(), line, "{name}");
        }
    }

    #[test]
    fn one_line_skips_causes_already_said() {
        let inner = std::io::Error::other("disk full");
        let err = anyhow::Error::new(inner).context("writing part: disk full");
        assert_eq!(one_line(&err), "writing part: disk full");
    }
}
