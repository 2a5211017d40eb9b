use std::process::ExitCode;

fn main() -> ExitCode {
    d1r2::main()
}
