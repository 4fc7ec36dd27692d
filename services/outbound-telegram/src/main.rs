//! The `outbound-telegram` binary: one service in its own process.

fn main() -> std::process::ExitCode {
    patchbay_runtime::lifecycle::main("outbound-telegram", &[patchbay_outbound_telegram::start])
}
