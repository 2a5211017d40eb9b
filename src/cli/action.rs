//! Running as a GitHub Action: inputs in, outputs and a step summary out.
//!
//! The container runs the binary with no arguments; with `GITHUB_ACTIONS=true` and any
//! `INPUT_*` variable set (the runner sets one for every input action.yml declares), they are turned into a command line and parsed by the
//! same clap definitions as the CLI, so an input means exactly what the flag of the same name
//! means. Results go to `$GITHUB_OUTPUT` (heredoc syntax with a random delimiter, so no value can
//! end its own entry early) and `$GITHUB_STEP_SUMMARY`; secrets are masked before anything else
//! is printed.
//!
//! The runner mounts the workspace and the folder of those two files from its own user into the
//! container: only root can write them, which is why the image has no `USER`. Both files are
//! opened before the command runs, so a step that could not report its results (a non-root
//! image, a wrong path) fails in one line before it changes anything.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;

use clap::CommandFactory;

use crate::cli::args::Cli;
use crate::error::{Result, bad_input};
use crate::model::report::{Report, summary_markdown};
use crate::redact;

/// Inputs the action reads itself rather than passing to the command.
pub const ACTION_INPUTS: [&str; 2] = ["command", crate::remote::checks::INPUT];

/// Masks the values of [`redact::SECRET_VARIABLES`] (each line of a multi-line value), before
/// anything else is printed, so no later log line can reveal one.
pub(crate) fn mask_environment(
    env: &BTreeMap<String, String>,
    out: &mut impl Write,
) -> std::io::Result<()> {
    for name in redact::SECRET_VARIABLES {
        if let Some(value) = env.get(name) {
            for line in value.lines().map(str::trim).filter(|l| !l.is_empty()) {
                add_mask(line, out)?;
            }
        }
    }
    Ok(())
}

/// `::add-mask::` for `value`, escaped as the toolkit's `escapeData` does: the runner unescapes
/// `%25`, `%0D` and `%0A` in a command's data, so a secret holding `%0A` written raw would be
/// masked as another string.
fn add_mask(value: &str, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "::add-mask::{}", redact::command_data(value))
}

/// Whether the process was started by the runner as an action step.
/// A step without `command` is still one: it gets an `::error::` and `status=failure`, not
/// the command line's usage text.
pub(crate) fn is_action_mode(env: &BTreeMap<String, String>) -> bool {
    env.get("GITHUB_ACTIONS").is_some_and(|v| v == "true")
        && env.keys().any(|k| k.starts_with("INPUT_"))
}

/// The command line for the action's inputs: `d1r2 COMMAND --input value ...`. Inputs the
/// chosen command does not have are left out (the action declares the inputs of every
/// command); empty inputs are left out; `true`/`false` inputs become switches; inputs that take
/// several values accept one per line or comma-separated.
pub(crate) fn command_line(env: &BTreeMap<String, String>) -> Result<Vec<String>> {
    let command = env
        .get("INPUT_COMMAND")
        .map(|c| c.trim().to_string())
        .unwrap_or_default();
    let cli = Cli::command();
    let known = || {
        let names: Vec<&str> = cli.get_subcommands().map(|s| s.get_name()).collect();
        names.join(", ")
    };
    if command.is_empty() {
        return Err(bad_input(format!(
            "input command is missing: set it to one of {}",
            known()
        )));
    }
    let Some(sub) = cli.find_subcommand(&command) else {
        return Err(bad_input(format!(
            "input command: unknown command {command:?}; one of {}",
            known()
        )));
    };
    let mut args = vec!["d1r2".to_string(), command.clone()];
    for (name, value) in env {
        let Some(input) = name.strip_prefix("INPUT_") else {
            continue;
        };
        let input = input.to_ascii_lowercase().replace('_', "-");
        let value = value.trim();
        if ACTION_INPUTS.contains(&input.as_str()) {
            continue;
        }
        // The runner passes a `with:` key the action does not declare on as well (after a
        // warning): a misspelt input must not be dropped in silence, empty or not.
        let is_option = |command: &clap::Command| {
            command
                .get_arguments()
                .any(|a| a.get_long() == Some(input.as_str()))
        };
        // The options every command has (`--heartbeat-url`) are the top level's.
        if !cli.get_subcommands().any(is_option) && !is_option(&cli) {
            return Err(bad_input(format!(
                "input {input} ({name}): d1r2 has no such input; the inputs are listed in action.yml"
            )));
        }
        if value.is_empty() {
            continue;
        }
        let Some(arg) = sub
            .get_arguments()
            .chain(cli.get_arguments().filter(|a| a.is_global_set()))
            .find(|a| a.get_long() == Some(input.as_str()))
        else {
            continue;
        };
        if arg.get_action().takes_values() {
            let multiple = arg.get_num_args().is_some_and(|n| n.max_values() > 1)
                || matches!(arg.get_action(), clap::ArgAction::Append);
            // Commas separate values too, unless the flag declares lines as its delimiter (a
            // header value may hold commas).
            let commas = arg.get_value_delimiter() != Some('\n');
            let values: Vec<&str> = if multiple {
                value
                    .split(|c| c == '\n' || (commas && c == ','))
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .collect()
            } else {
                vec![value]
            };
            for v in values {
                args.push(format!("--{input}"));
                args.push(v.to_string());
            }
        } else {
            match value {
                "true" => args.push(format!("--{input}")),
                "false" => {}
                other => {
                    return Err(bad_input(format!(
                        "input {input}: expected true or false, got {other:?}"
                    )));
                }
            }
        }
    }
    Ok(args)
}

/// A message in the step's terms: a step sets inputs, not flags, so each `--flag` that is an
/// input is named as one (`force: true` for a switch, `keep-within` for an option).
pub(crate) fn in_input_terms(line: &str) -> String {
    let cli = Cli::command();
    let switch = |name: &str| {
        cli.get_subcommands()
            .flat_map(|c| c.get_arguments())
            .chain(cli.get_arguments())
            .find(|a| a.get_long() == Some(name))
            .map(|a| !a.get_action().takes_values())
    };
    with_flags_as_inputs(line, switch)
}

/// [`in_input_terms`] with the flags' kinds given: `Some(true)` a switch, `Some(false)` an
/// option, `None` not a flag (left as written).
fn with_flags_as_inputs(line: &str, switch: impl Fn(&str) -> Option<bool>) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find("--") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let len = after
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
            .unwrap_or(after.len());
        let name = after[..len].trim_end_matches('-');
        let starts_word = out.is_empty() || out.ends_with(|c: char| c.is_whitespace() || c == '(');
        match switch(name).filter(|_| starts_word && !name.is_empty()) {
            Some(true) => out.push_str(&format!("{name}: true")),
            Some(false) => out.push_str(name),
            None => out.push_str(&rest[at..at + 2 + name.len()]),
        }
        rest = &rest[at + 2 + name.len()..];
    }
    out.push_str(rest);
    out
}

/// Masks every secret output, so the runner hides it in all later log lines.
pub(crate) fn mask_secrets(report: &Report, out: &mut impl Write) -> std::io::Result<()> {
    for name in &report.secret_outputs {
        if let Some(value) = report.outputs.get(name) {
            for line in value.lines().filter(|l| !l.is_empty()) {
                add_mask(line, out)?;
            }
        }
    }
    Ok(())
}

/// Writes outputs in the `name<<DELIMITER` form, with a delimiter no value contains.
pub(crate) fn write_outputs(
    outputs: &BTreeMap<String, String>,
    out: &mut impl Write,
) -> std::io::Result<()> {
    for (name, value) in outputs {
        let mut delimiter;
        loop {
            delimiter = format!("ghadelimiter_{:032x}", rand::random::<u128>());
            if !value.contains(&delimiter) {
                break;
            }
        }
        writeln!(out, "{name}<<{delimiter}\n{value}\n{delimiter}")?;
    }
    Ok(())
}

/// An `::error::` annotation: one line, with the characters the runner treats specially escaped.
pub(crate) fn error_annotation(message: &str) -> String {
    format!("::error::{}", redact::command_data(message))
}

/// Checks that `$GITHUB_WORKSPACE` is a directory. The runner starts a container action in it
/// (`--workdir /github/workspace`), so relative paths in inputs name files of the checked-out
/// repository; one that is not there means the step cannot see the repository (bad input).
/// The process does not change into it: the working directory the runner chose stands.
pub(crate) fn check_workspace(env: &BTreeMap<String, String>) -> Result<()> {
    let Some(dir) = env.get("GITHUB_WORKSPACE").filter(|d| !d.is_empty()) else {
        return Ok(());
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(bad_input(format!(
            "GITHUB_WORKSPACE ({dir}) is not a directory"
        ))),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(bad_input(format!(
            "GITHUB_WORKSPACE ({dir}) does not exist: {err}"
        ))),
        Err(err) => Err(crate::error::failed(format!(
            "cannot read GITHUB_WORKSPACE ({dir}): {err}"
        ))),
    }
}

/// A file of the runner's that could not be written: the step fails (exit 1), naming the
/// variable and the path.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunnerFileError {
    #[error("cannot write {variable} ({path}): {source}{hint}")]
    Open {
        variable: &'static str,
        path: String,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("writing {variable} ({path}): {source}")]
    Write {
        variable: &'static str,
        path: String,
        source: std::io::Error,
    },
}

impl crate::error::Classify for RunnerFileError {
    fn kind(&self) -> crate::error::Kind {
        match self {
            RunnerFileError::Open { .. } | RunnerFileError::Write { .. } => {
                crate::error::Kind::Failed
            }
        }
    }
}

/// What a permission error means in a container action.
const NOT_ROOT_HINT: &str = "; d1r2 is not running as root: the runner's files belong to the \
runner's user, so a container action must run as root (no USER in the image, no --user)";

/// `$GITHUB_OUTPUT` and `$GITHUB_STEP_SUMMARY`, opened for appending.
pub(crate) struct RunnerFiles {
    files: Vec<RunnerFile>,
}

struct RunnerFile {
    variable: &'static str,
    path: String,
    file: File,
}

impl RunnerFiles {
    /// Opens the files the runner named; a variable that is unset or empty is skipped.
    pub(crate) fn open(env: &BTreeMap<String, String>) -> Result<Self, RunnerFileError> {
        let mut files = Vec::new();
        for variable in ["GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"] {
            let Some(path) = env.get(variable).filter(|p| !p.is_empty()) else {
                continue;
            };
            let opened = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(path);
            let file = opened.map_err(|source| RunnerFileError::Open {
                variable,
                path: path.clone(),
                hint: if source.kind() == std::io::ErrorKind::PermissionDenied && !is_root() {
                    NOT_ROOT_HINT
                } else {
                    ""
                },
                source,
            })?;
            files.push(RunnerFile {
                variable,
                path: path.clone(),
                file,
            });
        }
        Ok(RunnerFiles { files })
    }

    fn append(&mut self, variable: &str, text: &[u8]) -> Result<(), RunnerFileError> {
        for f in self.files.iter_mut().filter(|f| f.variable == variable) {
            f.file
                .write_all(text)
                .map_err(|source| RunnerFileError::Write {
                    variable: f.variable,
                    path: f.path.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Reports a finished command to the runner: masks, outputs, summary.
/// What is written is [`Report::redacted`]: the runner's files outlive the job's log.
pub(crate) fn publish(files: &mut RunnerFiles, report: &Report) -> Result<()> {
    mask_secrets(report, &mut std::io::stdout())?;
    let report = report.redacted();
    let mut outputs = Vec::new();
    write_outputs(&report.outputs, &mut outputs)?;
    files.append("GITHUB_OUTPUT", &outputs)?;
    files.append("GITHUB_STEP_SUMMARY", summary_markdown(&report).as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    type Case = (Vec<(&'static str, &'static str)>, Vec<&'static str>);

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn inputs_become_the_same_flags() {
        let cases: Vec<Case> = vec![
            (
                vec![
                    ("INPUT_COMMAND", "backup"),
                    ("INPUT_SOURCE", "app.db"),
                    ("INPUT_DEST", "a\nb, c"),
                    ("INPUT_LABEL", ""),
                ],
                vec![
                    "d1r2", "backup", "--dest", "a", "--dest", "b", "--dest", "c", "--source",
                    "app.db",
                ],
            ),
            (
                vec![
                    ("INPUT_COMMAND", "restore"),
                    ("INPUT_FROM", "d"),
                    ("INPUT_TO", "x.db"),
                    ("INPUT_FORCE", "true"),
                    ("INPUT_SOURCE", "ignored"),
                ],
                vec!["d1r2", "restore", "--force", "--from", "d", "--to", "x.db"],
            ),
            (
                vec![
                    ("INPUT_COMMAND", "list"),
                    ("INPUT_FROM", "d"),
                    ("INPUT_JSON", "false"),
                    ("INPUT_EXCLUDE-TABLES", "x"),
                ],
                vec!["d1r2", "list", "--from", "d"],
            ),
            (
                vec![
                    ("INPUT_COMMAND", "prune"),
                    ("INPUT_FROM", "d"),
                    ("INPUT_KEEP-DAILY", "7"),
                    ("INPUT_KEEP_LAST", "3"),
                    ("INPUT_KEEP-WEEKLY", ""),
                    ("INPUT_SOURCE", "app.db"),
                ],
                vec![
                    "d1r2",
                    "prune",
                    "--from",
                    "d",
                    "--keep-daily",
                    "7",
                    "--keep-last",
                    "3",
                ],
            ),
        ];
        for (vars, want) in cases {
            assert_eq!(command_line(&env(&vars)).unwrap(), want);
        }
    }

    #[test]
    fn bad_inputs_are_refused_naming_the_input() {
        type Refusal = (&'static [(&'static str, &'static str)], &'static str);
        let cases: &[Refusal] = &[
            (&[("INPUT_COMMAND", "nope")], "unknown command \"nope\""),
            (
                &[("INPUT_COMMAND", " ")],
                "input command is missing: set it to one of backup",
            ),
            (&[("INPUT_FROM", "b")], "input command is missing"),
            (
                &[("INPUT_COMMAND", "restore"), ("INPUT_FORCE", "yes")],
                "input force: expected true or false, got \"yes\"",
            ),
            (
                &[("INPUT_COMMAND", "prune"), ("INPUT_KEEP-DAYLY", "7")],
                "input keep-dayly (INPUT_KEEP-DAYLY): d1r2 has no such input",
            ),
            (
                &[("INPUT_COMMAND", "list"), ("INPUT_SOURCES", "")],
                "input sources (INPUT_SOURCES): d1r2 has no such input",
            ),
        ];
        for (vars, want) in cases {
            let err = command_line(&env(vars)).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{vars:?}");
            let line = err.one_line();
            assert!(line.contains(want), "{vars:?}: {line}");
        }
    }

    #[test]
    fn flags_are_named_as_inputs() {
        let kinds = |name: &str| match name {
            "force" | "dry-run" => Some(true),
            "keep-within" | "max-age" => Some(false),
            _ => None,
        };
        for (line, want) in [
            (
                "x already holds data; pass --force to replace it",
                "x already holds data; pass force: true to replace it",
            ),
            (
                "--keep-within \"q\": expected a span",
                "keep-within \"q\": expected a span",
            ),
            (
                "older than --max-age 26h (--dry-run shows it)",
                "older than max-age 26h (dry-run: true shows it)",
            ),
            (
                "add --keep-* rules, or --nosuch",
                "add --keep-* rules, or --nosuch",
            ),
            ("a--force b -- c --", "a--force b -- c --"),
            ("no flag at all", "no flag at all"),
        ] {
            assert_eq!(with_flags_as_inputs(line, kinds), want, "{line}");
        }
    }

    #[test]
    fn outputs_use_delimiters_no_value_can_break() {
        let mut outputs = BTreeMap::new();
        outputs.insert(
            "body".to_string(),
            "line1\nEOF\nghadelimiter_\nline4".to_string(),
        );
        let mut buf = Vec::new();
        write_outputs(&outputs, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let first = text.lines().next().unwrap();
        let delimiter = first.strip_prefix("body<<").unwrap();
        assert_eq!(
            text,
            format!("body<<{delimiter}\nline1\nEOF\nghadelimiter_\nline4\n{delimiter}\n")
        );
    }

    #[test]
    fn secrets_are_masked_and_kept_out_of_the_summary() {
        let mut report = Report::new("totp");
        report.output("token", "123456");
        report.secret_outputs.push("token".into());
        report.row("Digits", 6);
        let mut buf = Vec::new();
        mask_secrets(&report, &mut buf).unwrap();
        assert_eq!(String::from_utf8(buf).unwrap(), "::add-mask::123456\n");
        assert!(!summary_markdown(&report).contains("123456"));
    }

    #[test]
    fn masks_are_escaped_as_the_toolkit_does() {
        let env = env(&[("GITHUB_TOKEN", "a%0Ab%c\r"), ("TOTP_SECRET", "x\ny")]);
        let mut buf = Vec::new();
        mask_environment(&env, &mut buf).unwrap();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "::add-mask::x\n::add-mask::y\n::add-mask::a%250Ab%25c\n"
        );
    }

    #[test]
    fn annotations_escape_newlines() {
        assert_eq!(error_annotation("a\nb 100%"), "::error::a%0Ab 100%25");
    }
}
