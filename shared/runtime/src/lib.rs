//! What every Patchbay process shares: telemetry, the HTTP edge (the bounded listener, ops
//! routes, JSON errors, request metrics) and the service lifecycle. A service is a library exposing a
//! [`lifecycle::StartFn`]; its binary's `main` is one call to [`lifecycle::main`], and
//! `patchbay all` passes every service's `StartFn` to the same function.

pub mod db;
pub mod edge;
pub mod http;
pub mod lifecycle;
pub mod telemetry;

pub use http::ApiError;

/// Every Patchbay binary allocates with mimalloc: in the benchmark's profile glibc's malloc and
/// free (with its chunk consolidation) took a sixth of the services' CPU. Defined here, where
/// every binary links, so no `main` can forget it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
pub use lifecycle::{BoxError, Deps, Service, StartFn};
