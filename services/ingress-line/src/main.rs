//! The `ingress-line` binary: one service in its own process.

fn main() -> std::process::ExitCode {
    patchbay_runtime::lifecycle::main("ingress-line", &[patchbay_ingress_line::start])
}
