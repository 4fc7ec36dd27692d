//! The `console` binary: one service in its own process.

fn main() -> std::process::ExitCode {
    patchbay_runtime::lifecycle::main("console", &[patchbay_console::start])
}
