//! The `webhook-dispatcher` binary: one service in its own process.

fn main() -> std::process::ExitCode {
    patchbay_runtime::lifecycle::main("webhook-dispatcher", &[patchbay_webhook_dispatcher::start])
}
