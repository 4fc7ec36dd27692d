//! The `ingress-viber` binary: one service in its own process.

fn main() -> std::process::ExitCode {
    patchbay_runtime::lifecycle::main("ingress-viber", &[patchbay_ingress_viber::start])
}
