//! The `ingress-messenger` binary: one service in its own process.

fn main() -> std::process::ExitCode {
    patchbay_runtime::lifecycle::main("ingress-messenger", &[patchbay_ingress_messenger::start])
}
