//! The `ingress-whatsapp` binary: one service in its own process.

fn main() -> std::process::ExitCode {
    patchbay_runtime::lifecycle::main("ingress-whatsapp", &[patchbay_ingress_whatsapp::start])
}
