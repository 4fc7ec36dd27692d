//! The `outbound-viber` binary: one service in its own process.

fn main() -> std::process::ExitCode {
    patchbay_runtime::lifecycle::main("outbound-viber", &[patchbay_outbound_viber::start])
}
