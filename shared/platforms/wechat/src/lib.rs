//! WeChat Official Accounts adapter (`reference/platforms.md` §4).
//!
//! * [`crypto`]: the server-configuration signature, safe mode's `msg_signature` and its
//!   AES-256-CBC message encryption (32-byte PKCS#7 blocks, the AppID checked);
//! * [`inbound`]: the `echostr` handshake, every POST's signature (and decryption in the safe
//!   and compatible modes), one envelope per message or event, and normalisation;
//! * [`outbound`]: the content model rendered for the customer-service message API (media
//!   uploaded as temporary media, `msgmenu` for buttons and quick replies, `news` for cards),
//!   template messages, every `errcode` classified, and `user/info` profiles;
//! * [`passive`]: the passive reply, WeChat's inline answer within five seconds, which
//!   accounts without the customer-service API answer with;
//! * [`tokens`]: one access token per AppID for the whole installation, shared by every
//!   replica through the `<p>_tokens` bucket;
//! * [`capabilities`]: what WeChat shows natively;
//! * [`credentials`]: the AppID and AppSecret, the server configuration's Token and
//!   EncodingAESKey, and whether the account has the customer-service API;
//! * [`WINDOW`]: the 48-hour customer-service window, template messages outside it;
//! * [`SPEC`]: what the other services ask about WeChat;
//! * [`fixtures`]: webhooks as WeChat sends them (plain, compatible and safe), for tests.

pub mod capabilities;
pub mod credentials;
pub mod crypto;
pub mod fixtures;
#[cfg(test)]
mod fuzz;
pub mod inbound;
pub mod outbound;
pub mod passive;
pub mod tokens;

pub use credentials::WechatCredentials;
pub use inbound::Wechat;
pub use outbound::WechatSender;

use patchbay_contract::Platform;
use patchbay_contract::windows::{DAY, WindowPolicy};
use patchbay_platform::InboundAdapter;
use patchbay_platform::spec::{
    self, CredentialField, FirstContact, MediaLimit, MediaLimits, PlatformSpec,
};

/// WeChat's 48-hour customer-service window: at most five customer-service messages for 48
/// hours after each message from the user (WeChat answers 45047 beyond them), template
/// messages (service accounts) outside it and beyond the quota.
pub const WINDOW: WindowPolicy = WindowPolicy {
    platform: Platform::Wechat,
    window_secs: Some(2 * DAY),
    templates_outside: true,
    human_agent_secs: None,
    reply_token_secs: None,
    per_inbound: Some(5),
    billed_outside: false,
    billed_allowed: false,
    name: "WeChat's 48-hour customer-service window",
};

/// WeChat, as the registry lists it.
pub const SPEC: PlatformSpec = PlatformSpec {
    platform: Platform::Wechat,
    window: WINDOW,
    credentials: spec::as_given::<WechatCredentials>,
    form: &[
        CredentialField::text(
            "app_id",
            "AppID",
            "wx and 16 letters or digits (Development, Basic configuration).",
        ),
        CredentialField::secret(
            "app_secret",
            "AppSecret",
            "Fetches the account's access tokens.",
        ),
        CredentialField::secret("token", "Token", "The server configuration's Token."),
        CredentialField::secret(
            "encoding_aes_key",
            "EncodingAESKey",
            "43 characters; only for the compatible and safe message modes.",
        )
        .optional(),
        CredentialField::text(
            "customer_service_api",
            "Customer-service message API",
            "Verified accounts have it; without it the bot answers only inline, within 5 s.",
        )
        .flag(),
    ],
    normalise: <Wechat as InboundAdapter>::normalise,
    webhook_path: |channel| spec::webhook_path_for(Platform::Wechat, channel),
    first_contact: FirstContact::None,
    // Temporary media uploads (`media/upload`): no files.
    media: MediaLimits {
        image: Some(MediaLimit {
            max_bytes: spec::mib(10),
            types: &["image/jpeg", "image/png", "image/gif", "image/bmp"],
        }),
        audio: Some(MediaLimit {
            max_bytes: spec::mib(2),
            types: &["audio/amr", "audio/mpeg"],
        }),
        video: Some(MediaLimit {
            max_bytes: spec::mib(10),
            types: &["video/mp4"],
        }),
        file: None,
    },
    settings: spec::no_settings,
    template: registry_template,
    try_it: None,
    bulk: None,
};

/// A registry template's WeChat form: its template message, in the content model's template
/// form the sender renders as `message/template/send`.
fn registry_template(
    def: &patchbay_contract::templates::TemplateDef,
) -> Option<patchbay_contract::content::Template> {
    def.wechat
        .as_ref()
        .map(patchbay_contract::templates::WechatTemplate::as_template)
}
