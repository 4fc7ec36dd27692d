//! Database failures as consumer outcomes: unreachable or overloaded means "unavailable"
//! (retried without limit, never dead-lettered); a statement failing counts against the
//! message.

use patchbay_bus::HandlerError;
use patchbay_store::batch::BatchError;

/// A failed statement as a handler's outcome.
pub fn db_error(e: sqlx::Error) -> HandlerError {
    if patchbay_store::is_unavailable(&e) {
        HandlerError::unavailable(format!("database: {e}"))
    } else {
        HandlerError::retry(format!("database: {e}"))
    }
}

/// A failed group commit ([`patchbay_store::batch`]) as a handler's outcome.
pub fn batch_error(e: BatchError) -> HandlerError {
    if e.unavailable {
        HandlerError::unavailable(format!("database: {}", e.message))
    } else {
        HandlerError::retry(format!("database: {}", e.message))
    }
}
