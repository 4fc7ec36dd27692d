//! Messenger's channel credentials: one Facebook Page of a Meta app.

use patchbay_contract::content::FieldError;
use patchbay_platform::meta;
use patchbay_platform::spec::{self, ChannelCredentials};
use serde::{Deserialize, Serialize};

/// Messenger: one Facebook Page of a Meta app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessengerCredentials {
    /// The Page's id (`entry[].id` of its webhooks; the Send API's `/{page_id}/messages`).
    pub page_id: String,
    /// A Page access token with `pages_messaging`.
    pub page_access_token: String,
    /// The Meta app's secret: `X-Hub-Signature-256` is its HMAC-SHA256 of the body.
    pub app_secret: String,
    /// The verify token the webhook handshake (`hub.verify_token`) must carry.
    pub verify_token: String,
}

impl ChannelCredentials for MessengerCredentials {
    /// Checks the forms Meta uses.
    fn validate(&self) -> Result<(), FieldError> {
        meta::graph_id("page_id", &self.page_id)?;
        spec::tokens(&[
            ("page_access_token", &self.page_access_token),
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

    #[test]
    fn messenger_credentials_are_checked() {
        let fb = json!({"page_id": "1234", "page_access_token": "EAAB", "app_secret": "a",
                        "verify_token": "v"});
        assert!(as_given::<MessengerCredentials>(fb.clone()).is_ok());
        let mut bad_token = fb.clone();
        bad_token["page_access_token"] = json!("has space");
        let Err(CredentialsError::Invalid(e)) = as_given::<MessengerCredentials>(bad_token) else {
            panic!("a token with a space is refused");
        };
        assert_eq!(e.field, "credentials.page_access_token");
        let mut bad_id = fb;
        bad_id["page_id"] = json!("my-page");
        let Err(CredentialsError::Invalid(e)) = as_given::<MessengerCredentials>(bad_id) else {
            panic!("a page id that is not numeric is refused");
        };
        assert_eq!(e.field, "credentials.page_id");
    }
}
