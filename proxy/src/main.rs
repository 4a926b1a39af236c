//! The `pointsman` binary: the command line of [`pointsman::cli`].

fn main() -> std::process::ExitCode {
    pointsman::cli::main()
}
