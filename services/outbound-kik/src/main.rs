//! The `outbound-kik` binary: one service in its own process.

fn main() -> std::process::ExitCode {
    patchbay_runtime::lifecycle::main("outbound-kik", &[patchbay_outbound_kik::start])
}
