//! The `ingress-wechat` binary: one service in its own process.

fn main() -> std::process::ExitCode {
    patchbay_runtime::lifecycle::main("ingress-wechat", &[patchbay_ingress_wechat::start])
}
