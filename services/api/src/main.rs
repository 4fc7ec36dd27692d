//! The `api` binary: one service in its own process.

fn main() -> std::process::ExitCode {
    patchbay_runtime::lifecycle::main("api", &[patchbay_api::start])
}
