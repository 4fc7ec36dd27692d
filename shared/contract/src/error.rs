//! Errors raised by the contract crate itself.

/// A value that violates the messaging contract (a bad prefix, an unknown version, ...).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContractError {
    /// The subject prefix is empty or has characters other than `a-z`, `0-9`, `_` and `-`.
    #[error(
        "invalid subject prefix {0:?}: use 1-32 characters of lowercase letters, digits, '_' or '-'"
    )]
    InvalidPrefix(String),
    /// A token that must become part of a subject contains `.`, `*`, `>` or whitespace.
    #[error("invalid subject token {0:?}: it may not contain '.', '*', '>' or whitespace")]
    InvalidToken(String),
}
