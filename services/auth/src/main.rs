//! The `auth` binary: one service in its own process.

fn main() -> std::process::ExitCode {
    patchbay_runtime::lifecycle::main("auth", &[patchbay_auth::start])
}
