//! What every Patchbay process shares: telemetry, the HTTP edge (ops routes, JSON errors,
//! request metrics) and the service lifecycle. A service is a library exposing a
//! [`lifecycle::StartFn`]; its binary's `main` is one call to [`lifecycle::main`], and
//! `patchbay all` passes every service's `StartFn` to the same function.

pub mod db;
pub mod http;
pub mod lifecycle;
pub mod telemetry;

pub use http::ApiError;
pub use lifecycle::{BoxError, Deps, Service, StartFn};
