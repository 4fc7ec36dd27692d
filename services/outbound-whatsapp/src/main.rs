//! The `outbound-whatsapp` binary: one service in its own process.

fn main() -> std::process::ExitCode {
    patchbay_runtime::lifecycle::main("outbound-whatsapp", &[patchbay_outbound_whatsapp::start])
}
