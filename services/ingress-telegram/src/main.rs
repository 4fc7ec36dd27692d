//! The `ingress-telegram` binary: one service in its own process.

fn main() -> std::process::ExitCode {
    patchbay_runtime::lifecycle::main("ingress-telegram", &[patchbay_ingress_telegram::start])
}
