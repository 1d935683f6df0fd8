//! threadtrace: why did that thread (or process) fail to start?
fn main() -> std::process::ExitCode {
    threadtrace::cli::main()
}
