//! The `bot-router` binary: one service in its own process.

fn main() -> std::process::ExitCode {
    patchbay_runtime::lifecycle::main("bot-router", &[patchbay_bot_router::start])
}
