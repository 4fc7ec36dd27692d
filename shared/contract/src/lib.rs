//! The messaging contract of Patchbay: every NATS subject, stream, consumer, key-value bucket
//! and header name, and the versioned wire types that travel on them.
//!
//! Nothing else in the workspace spells a subject or a stream name; services ask [`Subjects`]
//! and [`topology`] instead. Wire types are separate from the services' domain types, carry
//! `"v": 1`, and have JSON Schemas generated into `proto-schemas/` by [`schema`].

pub mod access;
pub mod brandchat;
pub mod broadcasts;
pub mod chat_api;
pub mod content;
pub mod error;
pub mod fields;
#[cfg(test)]
mod fuzz;
pub mod headers;
pub mod ids;
pub mod partners;
pub mod schema;
pub mod scopes;
pub mod subjects;
pub mod templates;
pub mod topology;
pub mod web1on1;
pub mod windows;
pub mod wire;

pub use content::Content;
pub use error::ContractError;
pub use subjects::Subjects;
pub use wire::*;
