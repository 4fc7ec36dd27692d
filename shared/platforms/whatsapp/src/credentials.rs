//! WhatsApp's channel credentials: one business phone number of a Meta app.

use patchbay_contract::content::FieldError;
use patchbay_platform::meta;
use patchbay_platform::spec::{self, ChannelCredentials};
use serde::{Deserialize, Serialize};

/// WhatsApp Business Cloud API: one business phone number of a Meta app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsappCredentials {
    /// The phone number's id (`metadata.phone_number_id`; `/{phone_number_id}/messages`).
    pub phone_number_id: String,
    /// A system-user or business-integration access token.
    pub access_token: String,
    /// The Meta app's secret: `X-Hub-Signature-256` is its HMAC-SHA256 of the body.
    pub app_secret: String,
    /// The verify token the webhook handshake (`hub.verify_token`) must carry.
    pub verify_token: String,
}

impl ChannelCredentials for WhatsappCredentials {
    /// Checks the forms Meta uses.
    fn validate(&self) -> Result<(), FieldError> {
        meta::graph_id("phone_number_id", &self.phone_number_id)?;
        spec::tokens(&[
            ("access_token", &self.access_token),
            ("app_secret", &self.app_secret),
            ("verify_token", &self.verify_token),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use patchbay_platform::spec::{CredentialsError, as_given};
    use serde_json::json;

    fn field_of(given: serde_json::Value) -> FieldError {
        match as_given::<WhatsappCredentials>(given) {
            Err(CredentialsError::Invalid(e)) => e,
            other => panic!("refused expected, got {other:?}"),
        }
    }

    #[test]
    fn whatsapp_credentials_are_checked() {
        let wa = json!({"phone_number_id": "106540352242922", "access_token": "EAAG1",
                        "app_secret": "s3cr3t", "verify_token": "vt"});
        assert!(as_given::<WhatsappCredentials>(wa.clone()).is_ok());
        let mut with_base = wa.clone();
        with_base["api_base_url"] = json!("http://127.0.0.1:9");
        assert!(
            field_of(with_base).message.contains("unknown field"),
            "api_base_url goes beside credentials, not in them"
        );
        let mut bad_id = wa.clone();
        bad_id["phone_number_id"] = json!("PNID");
        assert_eq!(field_of(bad_id).field, "credentials.phone_number_id");
        let mut unknown = wa;
        unknown["page_id"] = json!("1");
        assert!(field_of(unknown).message.contains("unknown field"));
    }
}
