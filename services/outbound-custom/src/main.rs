//! The `outbound-custom` binary: one service in its own process.

fn main() -> std::process::ExitCode {
    patchbay_runtime::lifecycle::main("outbound-custom", &[patchbay_outbound_custom::start])
}
