//! Fuzz tests of BrandChat's `X-Chat-Signature` check (`docs/security.md`), which `api` runs
//! on every `/brandchat/api/*` request before it reads the body.

use patchbay_testkit::fuzz::{self, proptest::prelude::*};

use crate::webhook::{chat_signature, chat_signature_matches};

proptest! {
    #![proptest_config(fuzz::config())]

    /// The signature of a random body under a random key matches in either case and with
    /// surrounding spaces; one bit off, another key's, or arbitrary text does not.
    #[test]
    fn fuzz_brandchat_signature(
        key in any::<String>(),
        other_key in any::<String>(),
        body in fuzz::bytes(256),
        bit in any::<usize>(),
        arbitrary in any::<String>(),
    ) {
        let good = chat_signature(&key, &body);
        prop_assert!(chat_signature_matches(&key, &body, &good));
        let padded = format!(" {} ", good.to_uppercase());
        prop_assert!(chat_signature_matches(&key, &body, &padded));
        let mac = fuzz::unhex(&good).unwrap_or_default();
        prop_assert!(!chat_signature_matches(&key, &body, &fuzz::hex(&fuzz::flip(&mac, bit))));
        if other_key != key {
            prop_assert!(!chat_signature_matches(&other_key, &body, &good));
        }
        prop_assert_eq!(
            chat_signature_matches(&key, &body, &arbitrary),
            arbitrary.trim().eq_ignore_ascii_case(&good)
        );
    }
}
