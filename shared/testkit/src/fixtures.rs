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

/// The lowercase hex of HMAC-SHA1(`key`, `body`): what Web1on1 puts after `sha1=` in
/// `X-Hub-Signature` and BrandChat in `X-Chat-Signature` (computed here independently of the
/// code under test).
pub fn sha1_signature(key: &str, body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
