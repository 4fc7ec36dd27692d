//! What tests sign independently of the code under test. The platforms' own payloads live in
//! their crates (`patchbay_telegram::fixtures`, `patchbay_messenger::fixtures`,
//! `patchbay_whatsapp::fixtures`).

/// The lowercase hex of HMAC-SHA256(`app_secret`, `body`): what Meta puts after `sha256=` in
/// `X-Hub-Signature-256` (computed here independently of the ingress).
pub fn meta_signature(app_secret: &str, body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(app_secret.as_bytes()).expect("any key length");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
