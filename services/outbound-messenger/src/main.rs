//! The `outbound-messenger` binary: one service in its own process.

fn main() -> std::process::ExitCode {
    patchbay_runtime::lifecycle::main("outbound-messenger", &[patchbay_outbound_messenger::start])
}
