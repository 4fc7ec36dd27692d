//! The `ingress-kik` binary: one service in its own process.

fn main() -> std::process::ExitCode {
    patchbay_runtime::lifecycle::main("ingress-kik", &[patchbay_ingress_kik::start])
}
