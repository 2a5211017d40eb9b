//! The runner's contract for a container action, reproduced without Docker.
//!
//! A GitHub runner starts a Docker action's container with no arguments, `--workdir
//! /github/workspace`, and bind mounts of folders that belong to the runner's own user: the
//! workspace (the checked-out repository), `/github/file_commands` (the files behind
//! `GITHUB_OUTPUT` and `GITHUB_STEP_SUMMARY`) and `/github/home`. A bind mount keeps owners and
//! modes, so the container sees what is laid out here: folders 0755 and files 0644 (the runner's
//! umask), owned by a user other than root. Every input declared in action.yml reaches the
//! container as `INPUT_<NAME>`, upper-cased with its hyphens kept (`INPUT_KEEP-DAILY`), holding
//! the step's value or the input's default.
//!
//! Owning files as another user and dropping to one needs root: the two tests that do are
//! skipped, loudly, when not run as root, except with `D1R2_ROOT_TESTS` set (the project's GitHub
//! CI sets it), where they fail instead.

use crate::common;
use crate::common::cmd::{D1r2, Run, no_spawn};

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// The owner of the runner's folders and files (not root, not the uid below).
const RUNNER_UID: u32 = 1001;
/// A non-root user inside the container: distroless's `nonroot`, what a `USER` line gives.
const NON_ROOT_UID: u32 = 65532;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether a test that needs root can run; says loudly why not.
fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    let why = format!(
        "{test} needs root (to own files as uid {RUNNER_UID} and to run d1r2 as uid \
         {NON_ROOT_UID}); run it as root: sudo -E env \"PATH=$PATH\" cargo test --test it runner::"
    );
    assert!(
        std::env::var_os("D1R2_ROOT_TESTS").is_none(),
        "D1R2_ROOT_TESTS is set: {why}"
    );
    // Past the test harness's capture of eprintln!, so the skip shows in a passing run.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
    false
}

/// The runner's side of a step: a host folder holding the workspace, the file-command files and
/// the home folder, and the environment the runner gives the container.
struct Runner {
    _host: tempfile::TempDir,
    binary: PathBuf,
    workspace: PathBuf,
    output: PathBuf,
    summary: PathBuf,
    env: BTreeMap<String, String>,
}

impl Runner {
    fn new() -> Runner {
        let host = tempfile::tempdir().unwrap();
        let root = host.path();
        // The mount points' parents (`/github`) are Docker's own, 0755.
        chmod(root, 0o755);
        let workspace = root.join("work/repo/repo");
        let file_commands = root.join("work/_temp/_runner_file_commands");
        let home = root.join("work/_temp/_github_home");
        for dir in [&workspace.join("data"), &file_commands, &home] {
            std::fs::create_dir_all(dir).unwrap();
        }
        common::create_db(
            &workspace.join("data/app.db"),
            include_str!("../fixtures/edge.sql"),
        );
        let output = file_commands.join("set_output_6f1c2b7e");
        let summary = file_commands.join("step_summary_6f1c2b7e");
        std::fs::write(&output, "").unwrap();
        std::fs::write(&summary, "").unwrap();
        // The binary where any user may run it (the target folder may be private).
        let binary = root.join("d1r2");
        {
            let _no_fork = no_spawn();
            std::fs::copy(env!("CARGO_BIN_EXE_d1r2"), &binary).unwrap();
        }
        chmod(&binary, 0o755);
        for entry in walk(&root.join("work")) {
            let mode = if entry.is_dir() { 0o755 } else { 0o644 };
            chmod(&entry, mode);
            if is_root() {
                std::os::unix::fs::chown(&entry, Some(RUNNER_UID), Some(RUNNER_UID)).unwrap();
            }
        }
        let mut env = BTreeMap::new();
        let yml: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(include_str!("../../action.yml")).unwrap();
        for (name, input) in yml["inputs"].as_mapping().unwrap() {
            let default = match &input["default"] {
                serde_yaml_ng::Value::String(s) => s.clone(),
                serde_yaml_ng::Value::Bool(b) => b.to_string(),
                serde_yaml_ng::Value::Null => String::new(),
                other => panic!("input {name:?} has a default of another kind: {other:?}"),
            };
            env.insert(input_variable(name.as_str().unwrap()), default);
        }
        for (k, v) in [
            ("GITHUB_ACTIONS", "true"),
            ("CI", "true"),
            ("HOME", home.to_str().unwrap()),
            ("GITHUB_WORKSPACE", workspace.to_str().unwrap()),
            ("GITHUB_OUTPUT", output.to_str().unwrap()),
            ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
            ("GITHUB_EVENT_NAME", "schedule"),
        ] {
            env.insert(k.to_string(), v.to_string());
        }
        Runner {
            _host: host,
            binary,
            workspace,
            output,
            summary,
            env,
        }
    }

    /// Sets the step's `with:` inputs.
    fn with(&mut self, inputs: &[(&str, &str)]) -> &mut Runner {
        for (name, value) in inputs {
            self.env.insert(input_variable(name), value.to_string());
        }
        self
    }

    /// The container's process: no arguments, only the runner's environment, in the workspace.
    fn command(&self) -> D1r2 {
        let mut command = D1r2::at(&self.binary);
        command
            .env_clear()
            .envs(&self.env)
            .current_dir(&self.workspace);
        command
    }

    fn run(&self) -> Run {
        self.run_as(None)
    }

    /// Runs the step, as `uid` (and the same gid) when given.
    fn run_as(&self, uid: Option<u32>) -> Run {
        let mut command = self.command();
        if let Some(uid) = uid {
            command.cmd().uid(uid).gid(uid);
        }
        command.run()
    }

    fn outputs(&self) -> Vec<(String, String)> {
        crate::common::parse_outputs(&std::fs::read_to_string(&self.output).unwrap())
    }
}

/// The runner's name for an input's variable: upper case, hyphens kept, spaces as `_`.
fn input_variable(name: &str) -> String {
    format!("INPUT_{}", name.replace(' ', "_").to_uppercase())
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A folder and everything under it.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(walk(&path));
        } else {
            all.push(path);
        }
    }
    all
}

fn output<'a>(entries: &'a [(String, String)], name: &str) -> Option<&'a str> {
    entries
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The one `::error::` line of a failed run (and no panic, no other error line).
fn the_error_line(run: &Run) -> String {
    let stdout = &run.stdout;
    let stderr = &run.stderr;
    assert!(!stderr.contains("panicked"), "a panic: {stderr}");
    let errors: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("::error::"))
        .collect();
    assert_eq!(errors.len(), 1, "stdout: {stdout}\nstderr: {stderr}");
    errors[0].to_string()
}

fn assert_success(run: &Run) {
    let stdout = &run.stdout;
    assert!(
        run.status.success() && !stdout.contains("::error::"),
        "{:?}\nstdout: {stdout}\nstderr: {}",
        run.status,
        &run.stderr
    );
}

#[test]
fn as_root_backs_up_into_the_runners_workspace_and_reports() {
    if !root_or_skip("as_root_backs_up_into_the_runners_workspace_and_reports") {
        return;
    }
    let mut runner = Runner::new();
    runner.with(&[
        ("command", "backup"),
        ("source", "data/app.db"),
        ("dest", "backups"),
        ("prune", "true"),
        ("keep-daily", "7"),
    ]);
    let run = runner.run();
    assert_success(&run);
    let outputs = runner.outputs();
    assert_eq!(output(&outputs, "status"), Some("success"), "{outputs:?}");
    let id = output(&outputs, "backup-id").expect("a backup-id output");
    assert!(
        runner
            .workspace
            .join("backups")
            .join(id)
            .join("manifest.json")
            .is_file()
    );
    // keep-daily reached prune: with it and no other rule, one backup is kept.
    assert_eq!(output(&outputs, "kept"), Some("1"), "{outputs:?}");
    let summary = std::fs::read_to_string(&runner.summary).unwrap();
    assert!(summary.starts_with("### d1r2 backup: success"), "{summary}");
    // The runner's files keep their owner and mode: the runner reads them after the step.
    for file in [&runner.output, &runner.summary] {
        let meta = std::fs::metadata(file).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o777), (RUNNER_UID, 0o644));
    }

    // A second step of the same job appends to the same files.
    runner.with(&[("command", "verify"), ("from", "backups")]);
    let run = runner.run();
    assert_success(&run);
    let outputs = runner.outputs();
    let statuses: Vec<&str> = outputs
        .iter()
        .filter(|(n, _)| n == "status")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(statuses, ["success", "success"]);
    assert_eq!(output(&outputs, "backup-id"), Some(id));
}

#[test]
fn as_a_non_root_user_fails_in_one_line_before_doing_anything() {
    if !root_or_skip("as_a_non_root_user_fails_in_one_line_before_doing_anything") {
        return;
    }
    let mut runner = Runner::new();
    runner.with(&[
        ("command", "backup"),
        ("source", "data/app.db"),
        ("dest", "backups"),
    ]);
    let run = runner.run_as(Some(NON_ROOT_UID));
    let line = the_error_line(&run);
    assert_eq!(run.status.code(), Some(1), "{line}");
    assert!(
        line.contains(&format!(
            "cannot write GITHUB_OUTPUT ({})",
            runner.output.display()
        )) && line.contains("not running as root"),
        "{line}"
    );
    assert!(!runner.workspace.join("backups").exists());
    assert_eq!(std::fs::read_to_string(&runner.output).unwrap(), "");
}

#[test]
fn an_input_that_names_no_option_is_refused() {
    let mut runner = Runner::new();
    // A misspelt `with:` key: the runner warns and passes it on.
    runner.with(&[
        ("command", "prune"),
        ("from", "backups"),
        ("keep-dayly", "7"),
    ]);
    let run = runner.run();
    let line = the_error_line(&run);
    assert_eq!(run.status.code(), Some(2), "{line}");
    assert!(
        line.contains("input keep-dayly (INPUT_KEEP-DAYLY): d1r2 has no such input"),
        "{line}"
    );
    let outputs = runner.outputs();
    assert_eq!(output(&outputs, "status"), Some("failure"));
    assert!(output(&outputs, "error").unwrap().contains("keep-dayly"));
}

#[test]
fn an_input_value_no_option_takes_is_bad_usage() {
    let mut runner = Runner::new();
    runner.with(&[
        ("command", "prune"),
        ("from", "backups"),
        ("keep-daily", "seven"),
    ]);
    let run = runner.run();
    let line = the_error_line(&run);
    assert_eq!(run.status.code(), Some(2), "{line}");
    assert!(line.contains("seven"), "{line}");
    let outputs = runner.outputs();
    assert_eq!(output(&outputs, "status"), Some("failure"));
}

#[test]
fn a_workspace_that_does_not_exist_is_refused() {
    let mut runner = Runner::new();
    let missing = runner.workspace.join("gone");
    runner.env.insert(
        "GITHUB_WORKSPACE".into(),
        missing.to_str().unwrap().to_string(),
    );
    runner.with(&[("command", "list"), ("from", "backups")]);
    let run = runner.run();
    let line = the_error_line(&run);
    assert_eq!(run.status.code(), Some(2), "{line}");
    assert!(
        line.contains(&format!(
            "GITHUB_WORKSPACE ({}) does not exist",
            missing.display()
        )),
        "{line}"
    );
    assert_eq!(output(&runner.outputs(), "status"), Some("failure"));
}

#[test]
fn a_path_missing_from_the_workspace_is_refused() {
    let mut runner = Runner::new();
    runner.with(&[
        ("command", "backup"),
        ("source", "data/missing.db"),
        ("dest", "backups"),
    ]);
    let run = runner.run();
    let line = the_error_line(&run);
    assert_eq!(run.status.code(), Some(2), "{line}");
    assert!(line.contains("data/missing.db"), "{line}");
    assert!(!runner.workspace.join("backups").exists());
}

#[test]
fn a_runner_file_that_cannot_be_written_fails_before_the_command_runs() {
    // A folder where the file should be, and a file in a folder that is not there.
    type Where = fn(&Path) -> PathBuf;
    let cases: [(&str, Where); 2] = [
        ("GITHUB_OUTPUT", |folder| folder.to_path_buf()),
        ("GITHUB_STEP_SUMMARY", |folder| {
            folder.join("no-such-folder/summary")
        }),
    ];
    for (variable, path) in cases {
        let mut runner = Runner::new();
        let path = path(runner.output.parent().unwrap());
        runner.with(&[
            ("command", "backup"),
            ("source", "data/app.db"),
            ("dest", "backups"),
        ]);
        runner
            .env
            .insert(variable.into(), path.to_str().unwrap().to_string());
        let run = runner.run();
        let line = the_error_line(&run);
        assert_eq!(run.status.code(), Some(1), "{line}");
        assert!(
            line.contains(&format!("cannot write {variable} ({})", path.display())),
            "{line}"
        );
        assert!(!runner.workspace.join("backups").exists(), "{variable}");
    }
}

/// A step without a command, or with one d1r2 does not have, fails as any refused step does:
/// one `::error::` naming the input, `status=failure`, exit 2, and no usage text.
#[test]
fn a_missing_or_unknown_command_is_one_error() {
    let unknown = common::bed::random_name(7);
    for command in [None, Some(""), Some(unknown.as_str())] {
        let mut runner = Runner::new();
        runner.with(&[("from", "backups")]);
        match command {
            None => {
                runner.env.remove("INPUT_COMMAND");
            }
            Some(command) => {
                runner.with(&[("command", command)]);
            }
        }
        let run = runner.run();
        let line = the_error_line(&run);
        assert_eq!(run.status.code(), Some(2), "{command:?}: {line}");
        assert!(line.contains("input command"), "{command:?}: {line}");
        let text = format!("{}{}", run.stdout, run.stderr);
        assert!(!text.contains("Usage"), "{command:?}: {text}");
        assert_eq!(output(&runner.outputs(), "status"), Some("failure"));
    }
}

/// A refusal in a step names the input to set, since a step has no command line to add a flag
/// to: a restore over a database that holds data asks for `force: true`, not `--force`.
#[test]
fn refusals_name_the_input_not_the_flag() {
    let mut runner = Runner::new();
    runner.with(&[
        ("command", "backup"),
        ("source", "data/app.db"),
        ("dest", "backups"),
    ]);
    assert_success(&runner.run());
    runner.with(&[
        ("command", "restore"),
        ("from", "backups"),
        ("to", "data/app.db"),
    ]);
    let run = runner.run();
    let line = the_error_line(&run);
    assert_eq!(run.status.code(), Some(2), "{line}");
    assert!(line.contains("force: true"), "{line}");
    assert!(!line.contains("--"), "{line}");
    assert!(
        output(&runner.outputs(), "error").is_some_and(|e| e.contains("force: true")),
        "{:?}",
        runner.outputs()
    );
}
