//! Exit-code classification shared by every command.
//!
//! The contract gives three exit codes: 0 success, 1 the operation failed, 2 bad usage or bad
//! input. Commands return `anyhow::Error`; anything the user can fix by changing what they typed
//! or pointed us at is wrapped in [`BadInput`] somewhere in the chain and maps to 2.

use std::fmt;

/// An error caused by what the user asked for (a missing file, an unknown backup id), not by a
/// failure while doing it. Its message is printed as the one line on stderr.
#[derive(Debug)]
pub struct BadInput(pub String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// Shorthand for returning a [`BadInput`] as an `anyhow::Error`.
pub fn bad_input(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(BadInput(message.into()))
}

/// The process exit code for an error: 2 when any cause is bad input, 1 otherwise.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err
        .chain()
        .any(|cause| cause.downcast_ref::<BadInput>().is_some())
    {
        2
    } else {
        1
    }
}

/// One line for stderr: the whole chain of causes, outermost first, without repeating a cause
/// that an outer message already contains.
pub fn one_line(err: &anyhow::Error) -> String {
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

    #[test]
    fn bad_input_anywhere_in_the_chain_is_exit_2() {
        let err = bad_input("no such file").context("opening source");
        assert_eq!(exit_code(&err), 2);
        assert_eq!(one_line(&err), "opening source: no such file");
        let err = anyhow::anyhow!("upload failed").context("backup");
        assert_eq!(exit_code(&err), 1);
    }

    #[test]
    fn one_line_skips_causes_already_said() {
        let inner = std::io::Error::other("disk full");
        let err = anyhow::Error::new(inner).context("writing part: disk full");
        assert_eq!(one_line(&err), "writing part: disk full");
    }
}
