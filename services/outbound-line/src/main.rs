//! The `outbound-line` binary: one service in its own process.

fn main() -> std::process::ExitCode {
    patchbay_runtime::lifecycle::main("outbound-line", &[patchbay_outbound_line::start])
}
