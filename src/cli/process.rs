//! The process around a command: allocator, logging, runtime, output and exit code.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;

use crate::cli::action;
use crate::cli::args::{Cli, Command};
use crate::error::{Error, bad_input};
use crate::model::report::Report;
use crate::redact;
use clap::Parser;

/// The whole process: the allocator tuned, the command parsed (from the command line, or from
/// `INPUT_*` in action mode), run on a tokio runtime, its report or one error line printed, and
/// the exit code its error's kind gives.
pub fn main() -> ExitCode {
    tune_malloc();
    let env: BTreeMap<String, String> = std::env::vars().collect();
    // Before anything can be printed or stored: every exit redacts what is registered here.
    redact::register_env(&env);
    let actions = redact::in_github_actions(&env);
    let in_action = std::env::args().len() == 1 && action::is_action_mode(&env);
    let mut runner_files = None;
    let cli = if in_action {
        let _ = action::mask_environment(&env, &mut std::io::stdout());
        // Nothing runs unless its results can be reported; no file to report a failure in.
        let files = match action::RunnerFiles::open(&env) {
            Ok(files) => runner_files.insert(files),
            Err(err) => {
                let err = Error::from(err);
                println!("{}", action::error_annotation(&error_line(&err)));
                return ExitCode::from(err.exit_code());
            }
        };
        let parsed = action::check_workspace(&env)
            .and_then(|()| action::command_line(&env))
            // A value clap refuses is bad usage (exit 2), as it is on the command line.
            .and_then(|args| {
                Cli::try_parse_from(args).map_err(|e| bad_input(e.to_string().trim()))
            });
        match parsed {
            Ok(cli) => cli,
            Err(err) => return fail_action(&env, files, "d1r2", &err),
        }
    } else {
        Cli::parse()
    };
    init_logging(cli.verbose, actions);
    let json = matches!(&cli.command, Command::List(args) if args.json);
    let totp = matches!(&cli.command, Command::Totp(_));
    // `find` without --out prints its rows, JSON lines, on stdout: its report goes beside them.
    let rows_out = matches!(&cli.command, Command::Find(args) if args.out.is_none());
    let name = cli.command.name();
    let runtime = tokio::runtime::Runtime::new().expect("starting the async runtime");
    if in_action {
        println!("::group::d1r2 {name}");
    }
    // A progress line for the long commands, only on a terminal and never in action mode.
    let long = matches!(
        &cli.command,
        Command::Backup(_) | Command::Restore(_) | Command::Verify(_) | Command::Export(_)
    );
    let bytes = if matches!(&cli.command, Command::Backup(_)) {
        crate::model::progress::Bytes::Stored
    } else {
        crate::model::progress::Bytes::Sql
    };
    let progress = (long && !in_action && std::io::stderr().is_terminal())
        .then(|| crate::model::progress::show(name, bytes));
    let result = runtime.block_on(crate::cli::commands::run(cli.command, cli.heartbeat_url));
    drop(progress);
    if in_action {
        println!("::endgroup::");
    }
    // The one place a finished command's report is made safe to print, write and publish.
    let result = result.map(|report| report.redacted());
    if let Some(files) = runner_files.as_mut() {
        return match result {
            Ok(report) => {
                if let Err(err) = action::publish(files, &report) {
                    return fail_action(&env, files, name, &err);
                }
                let text = if json {
                    redact::json_controls(&report.to_text())
                } else {
                    redact::printed(&report.to_text(), actions)
                };
                print!("{}", redact::commands(&text));
                crate::remote::checks::publish_if_wanted(&env, &report);
                ExitCode::SUCCESS
            }
            Err(err) => fail_action(&env, files, name, &err),
        };
    }
    match result {
        Ok(report) if totp => {
            println!("{}", report.outputs["token"]);
            ExitCode::SUCCESS
        }
        Ok(report) if json => {
            // JSON escapes line ends and C0 itself; what it leaves raw is escaped its way.
            println!("{}", redact::json_controls(&report.detail));
            ExitCode::SUCCESS
        }
        Ok(report) if rows_out => {
            eprint!("{}", redact::printed(&report.to_text(), actions));
            ExitCode::SUCCESS
        }
        Ok(report) => {
            print!("{}", redact::printed(&report.to_text(), actions));
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {}", redact::printed(&err.one_line(), actions));
            ExitCode::from(err.exit_code())
        }
    }
}

/// The error's one line as it may leave the process: secrets, credentials and URLs' userinfo
/// and query redacted, control characters shown rather than sent.
fn error_line(err: &Error) -> String {
    redact::controls(&redact::text(&err.one_line()))
}

/// In action mode a failure still writes `status=failure` and a summary, and ends in an
/// `::error::` annotation that names the cause.
fn fail_action(
    env: &BTreeMap<String, String>,
    files: &mut action::RunnerFiles,
    command: &str,
    err: &Error,
) -> ExitCode {
    let line = action::in_input_terms(&error_line(err));
    let mut report = err
        .downcast_ref::<crate::model::report::Failure>()
        .map(|f| f.report.redacted())
        .unwrap_or_else(|| Report::new(command));
    report.output("status", "failure").output("error", &line);
    report.row("Error", &line);
    let _ = action::publish(files, &report);
    println!("{}", action::error_annotation(&line));
    crate::remote::checks::publish_if_wanted(env, &report);
    ExitCode::from(err.exit_code())
}

/// Log lines go to stderr through [`Sanitised`]; their level is not coloured, since an escape
/// sequence of ours could not be told from one in stored text quoted by a message.
fn init_logging(verbose: u8, actions: bool) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("D1R2_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("d1r2={level}"))),
        )
        .with_writer(move || Sanitised { actions })
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .init();
}

/// stderr for log lines, each made safe by [`redact::printed`] as it is written (the log layer
/// writes one whole line at a time), and on a line of its own when a progress line is shown.
struct Sanitised {
    actions: bool,
}

impl std::io::Write for Sanitised {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        crate::model::progress::log(redact::printed(&text, self.actions).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// glibc gives each thread that allocates an arena of its own and keeps freed memory there: with
/// pages parsed on the runtime's threads and rendered on blocking ones, that fragmentation alone
/// put the wide-row D1 benchmark at 65 MiB peak RSS instead of 59. Two arenas serve this workload.
/// Buffers of a megabyte and more (pages, D1's answers, compressed members) get mappings of their
/// own, returned when freed: by default glibc raises that threshold as such buffers are freed and
/// then keeps them in its arenas, and a long backup's peak RSS crept up with it (the narrow D1
/// benchmark at 53 MiB for 100 MB and 67 MiB for 1 GB).
#[cfg(target_env = "gnu")]
fn tune_malloc() {
    // SAFETY: mallopt only tunes the allocator, and runs before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
    // glibc hands freed memory back to the system only from the top of a heap: the free chunks
    // below a live one stay resident, and more of them as a long backup goes on (the narrow D1
    // benchmark's peak RSS: 45-50 MiB at 100 MB, 55-58 MiB at 1 GB). A trim every quarter of a
    // second returns them (40-44 and 47-48 MiB) for no CPU time we could measure; every 50 ms
    // it gave 41 and 42-46 MiB, but 10% more CPU time at 1 GB (the trims took 0.5 s of it; the
    // rest went to faulting the returned pages back in).
    let trimmer = std::thread::Builder::new().name("malloc-trim".into());
    let _ = trimmer.spawn(|| {
        loop {
            std::thread::sleep(TRIM_EVERY);
            // SAFETY: malloc_trim takes the allocator's own locks; it frees nothing in use.
            unsafe { libc::malloc_trim(0) };
        }
    });
}

/// How often freed memory is handed back to the system.
#[cfg(target_env = "gnu")]
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

#[cfg(not(target_env = "gnu"))]
fn tune_malloc() {}
