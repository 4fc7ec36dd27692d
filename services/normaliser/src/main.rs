//! The `normaliser` binary: one service in its own process.

fn main() -> std::process::ExitCode {
    patchbay_runtime::lifecycle::main("normaliser", &[patchbay_normaliser::start])
}
