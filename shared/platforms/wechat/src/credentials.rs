//! A WeChat Official Account's channel credentials, as operators give them to
//! `POST /admin/v1/bots/{id}/channels` (the admin console's 基本配置 page): the AppID and
//! AppSecret (for access tokens), the server configuration's Token (signatures) and, for the
//! compatible and safe message modes, its EncodingAESKey.

use patchbay_contract::content::FieldError;
use patchbay_platform::spec::{self, ChannelCredentials};
use serde::{Deserialize, Serialize};

use crate::crypto::AesKey;

/// One Official Account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WechatCredentials {
    /// The AppID (`wx` and 16 letters or digits).
    pub app_id: String,
    /// The AppSecret, which fetches access tokens.
    pub app_secret: String,
    /// The server configuration's Token: every webhook's `signature` is made with it.
    pub token: String,
    /// The 43-character EncodingAESKey of the compatible and safe message modes; absent for
    /// accounts in plaintext mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_aes_key: Option<String>,
    /// Whether the account has the customer-service message API (verified accounts). Without
    /// it, the bot can only answer inline, within WeChat's five seconds.
    #[serde(default = "yes")]
    pub customer_service_api: bool,
}

fn yes() -> bool {
    true
}

impl WechatCredentials {
    /// The AES key of the safe and compatible modes, if the account has one.
    pub fn aes_key(&self) -> Option<AesKey> {
        self.encoding_aes_key
            .as_deref()
            .and_then(|k| AesKey::from_encoding_aes_key(k).ok())
    }
}

impl ChannelCredentials for WechatCredentials {
    /// Checks the forms the admin console gives.
    fn validate(&self) -> Result<(), FieldError> {
        let app_id_ok = self.app_id.len() == 18
            && self.app_id.starts_with("wx")
            && self.app_id.chars().all(|c| c.is_ascii_alphanumeric());
        if !app_id_ok {
            return Err(FieldError::new(
                "credentials.app_id",
                "must be the AppID the admin console shows: wx and 16 letters or digits",
            ));
        }
        spec::tokens(&[("app_secret", &self.app_secret)])?;
        let token_ok = (3..=32).contains(&self.token.len())
            && self.token.chars().all(|c| c.is_ascii_alphanumeric());
        if !token_ok {
            return Err(FieldError::new(
                "credentials.token",
                "must be the server configuration's Token: 3 to 32 letters or digits",
            ));
        }
        if let Some(k) = &self.encoding_aes_key {
            let form_ok = k.len() == 43 && k.chars().all(|c| c.is_ascii_alphanumeric());
            if !form_ok || AesKey::from_encoding_aes_key(k).is_err() {
                return Err(FieldError::new(
                    "credentials.encoding_aes_key",
                    "must be the 43-letter EncodingAESKey the admin console shows",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use patchbay_platform::spec::{CredentialsError, as_given};
    use serde_json::json;

    fn field_of(given: serde_json::Value) -> FieldError {
        match as_given::<WechatCredentials>(given) {
            Err(CredentialsError::Invalid(e)) => e,
            other => panic!("refused expected, got {other:?}"),
        }
    }

    #[test]
    fn wechat_credentials_are_checked() {
        let ok = json!({"app_id": "wxb11529c136998cb6", "app_secret": "0123456789abcdef0123456789abcdef",
                        "token": "spamtest", "encoding_aes_key": "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"});
        let stored = as_given::<WechatCredentials>(ok.clone()).unwrap().stored;
        let creds: WechatCredentials = serde_json::from_value(stored).unwrap();
        assert!(creds.customer_service_api, "verified accounts by default");
        assert!(creds.aes_key().is_some());
        let mut plaintext = ok.clone();
        plaintext
            .as_object_mut()
            .unwrap()
            .remove("encoding_aes_key");
        plaintext["customer_service_api"] = json!(false);
        assert!(as_given::<WechatCredentials>(plaintext).is_ok());

        let mut bad = ok.clone();
        bad["app_id"] = json!("wx123");
        assert_eq!(field_of(bad).field, "credentials.app_id");
        let mut bad = ok.clone();
        bad["token"] = json!("has space");
        assert_eq!(field_of(bad).field, "credentials.token");
        let mut bad = ok.clone();
        bad["encoding_aes_key"] = json!("short");
        assert_eq!(field_of(bad).field, "credentials.encoding_aes_key");
        let mut bad = ok;
        bad["api_base_url"] = json!("http://127.0.0.1:9");
        assert!(field_of(bad).message.contains("unknown field"));
    }
}
