//! The node the end-to-end tests run: the `pointsman` command, exactly as `proxy/src/main.rs`.

fn main() -> std::process::ExitCode {
    pointsman::cli::main()
}
