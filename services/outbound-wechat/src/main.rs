//! The `outbound-wechat` binary: one service in its own process.

fn main() -> std::process::ExitCode {
    patchbay_runtime::lifecycle::main("outbound-wechat", &[patchbay_outbound_wechat::start])
}
