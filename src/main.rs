use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use d1r2::cli::{Cli, Command};
use d1r2::error::{exit_code, one_line};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("D1R2_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("d1r2={level}"))),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_target(false)
        .init();
    let json = matches!(&cli.command, Command::List(args) if args.json);
    let runtime = tokio::runtime::Runtime::new().expect("starting the async runtime");
    match runtime.block_on(d1r2::commands::run(cli.command)) {
        Ok(report) if json => {
            println!("{}", report.detail);
            ExitCode::SUCCESS
        }
        Ok(report) => {
            print!("{}", report.to_text());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            ExitCode::from(exit_code(&err))
        }
    }
}
