//! NATS header names used by Patchbay. Handlers never spell a header name themselves.

/// JetStream de-duplication key (the platform's own event id on ingress).
pub const MSG_ID: &str = "Nats-Msg-Id";
/// W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
/// W3C trace state.
pub const TRACESTATE: &str = "tracestate";
/// The wire type and version of the payload, e.g. `ingress_envelope.v1`.
pub const SCHEMA: &str = "Pb-Schema";
/// Dead letters: why the message was dead-lettered.
pub const DLQ_REASON: &str = "Pb-Dlq-Reason";
/// Dead letters: the durable consumer that gave up on it.
pub const DLQ_CONSUMER: &str = "Pb-Dlq-Consumer";
/// Dead letters: the subject the message was originally published on.
pub const DLQ_SUBJECT: &str = "Pb-Dlq-Subject";
/// Dead letters: the stream the message came from.
pub const DLQ_STREAM: &str = "Pb-Dlq-Stream";
/// Dead letters: the sequence of the message in its original stream.
pub const DLQ_STREAM_SEQ: &str = "Pb-Dlq-Stream-Seq";
/// Dead letters: how many times the message had been delivered.
pub const DLQ_DELIVERIES: &str = "Pb-Dlq-Deliveries";
/// Dead letters: when it was dead-lettered (RFC 3339).
pub const DLQ_AT: &str = "Pb-Dlq-At";
/// Dead letter: set when the payload is only the start of the original, whose size in bytes
/// it gives (the original fitted the bus, the copy with its headers did not).
pub const DLQ_TRUNCATED: &str = "Pb-Dlq-Truncated";
/// Request/reply: the body is sealed with the master key (XChaCha20-Poly1305; the request's
/// subject, or `reply:` and it for the answer, as associated data), so secrets in it (channel
/// credentials, fresh API keys) are never on the wire in clear.
pub const SEALED: &str = "Pb-Sealed";
