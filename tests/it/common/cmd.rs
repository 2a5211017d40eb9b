//! The one way the tests run the built `d1r2` binary, in the manner of ripgrep's `TestCommand`:
//! a builder for arguments, environment and folder, a [`Run`] that holds what the process
//! printed and how it exited, and assertions that show all of it when they fail.

use std::ffi::OsStr;
use std::fmt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};

/// Held while a child process is spawned, and by a test while it writes an executable: a fork
/// made while an executable is open for writing keeps it open until the child execs, and running
/// that executable then fails with "text file busy" (ETXTBSY). All the tests share one process,
/// so one lock; the other programs the tests start (python3, sqlite3, wrangler) do not take it,
/// so a spawn that meets a busy executable is also retried.
static SPAWN: Mutex<()> = Mutex::new(());

/// Spawns `spawn` under [`SPAWN`], again while the executable is busy (for at most a second).
fn spawned<C>(mut spawn: impl FnMut() -> std::io::Result<C>) -> C {
    let mut tries = 0;
    loop {
        let result = {
            let _spawning = no_spawn();
            spawn()
        };
        match result {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 20 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other.expect("running d1r2"),
        }
    }
}

/// Locks out every spawn made through [`D1r2`] until the guard drops.
pub fn no_spawn() -> MutexGuard<'static, ()> {
    SPAWN.lock().unwrap_or_else(|e| e.into_inner())
}

/// A `d1r2` command to run: the binary cargo built, or a copy of it ([`D1r2::at`]).
pub struct D1r2 {
    cmd: Command,
}

impl D1r2 {
    /// The binary under test, with the environment of the test process.
    pub fn new() -> D1r2 {
        D1r2::at(Path::new(env!("CARGO_BIN_EXE_d1r2")))
    }

    /// The executable at `binary` (a copy of the binary placed where another user may run it).
    pub fn at(binary: &Path) -> D1r2 {
        D1r2 {
            cmd: Command::new(binary),
        }
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut D1r2 {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, A>(&mut self, args: I) -> &mut D1r2
    where
        I: IntoIterator<Item = A>,
        A: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut D1r2 {
        self.cmd.env(key, value);
        self
    }

    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut D1r2
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.cmd.envs(vars);
        self
    }

    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut D1r2 {
        self.cmd.env_remove(key);
        self
    }

    /// Starts from an empty environment, as a container's process does.
    pub fn env_clear(&mut self) -> &mut D1r2 {
        self.cmd.env_clear();
        self
    }

    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut D1r2 {
        self.cmd.current_dir(dir);
        self
    }

    /// The underlying command, for what the builder does not cover (a user id to run as).
    pub fn cmd(&mut self) -> &mut Command {
        &mut self.cmd
    }

    /// Runs the process to its end, blocking the thread.
    pub fn run(&mut self) -> Run {
        self.pipes();
        let child = spawned(|| self.cmd.spawn());
        let output = child.wait_with_output().expect("waiting for d1r2");
        Run::new(&self.cmd, output)
    }

    /// Runs the process to its end without blocking the runtime, for tests whose in-process
    /// fakes answer it on the same runtime.
    pub async fn run_async(&mut self) -> Run {
        self.pipes();
        let described = format!("{:?}", self.cmd);
        // tokio's command is made from an owned one: the builder is spent by the run.
        let spent = Command::new(self.cmd.get_program());
        let mut command = tokio::process::Command::from(std::mem::replace(&mut self.cmd, spent));
        let child = spawned(|| command.spawn());
        let output = child.wait_with_output().await.expect("waiting for d1r2");
        Run::described(described, output)
    }

    /// An empty stdin, as `Command::output` gives, and both outputs captured.
    fn pipes(&mut self) {
        self.cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    }
}

/// What a finished run printed and how it exited.
pub struct Run {
    /// The command as run (program, arguments, environment changes), for failure messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn new(cmd: &Command, output: std::process::Output) -> Run {
        Run::described(format!("{cmd:?}"), output)
    }

    fn described(command: String, output: std::process::Output) -> Run {
        Run {
            command,
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The exit code; `None` when a signal ended the process.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Asserts the run exited 0.
    #[track_caller]
    pub fn success(&self) -> &Run {
        assert!(self.status.success(), "expected success\n{self}");
        self
    }

    /// Asserts the run exited with `code`.
    #[track_caller]
    pub fn fails_with(&self, code: i32) -> &Run {
        assert_eq!(self.code(), Some(code), "expected exit {code}\n{self}");
        self
    }
}

/// The whole run: command, exit status, stdout and stderr.
impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "command: {}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}
