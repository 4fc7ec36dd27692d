//! The `ingress-custom` binary: one service in its own process.

fn main() -> std::process::ExitCode {
    patchbay_runtime::lifecycle::main("ingress-custom", &[patchbay_ingress_custom::start])
}
