//! Identifiers: prefixed ULIDs (`evt_01J…`) minted once, and deterministic derivations so that a
//! redelivered message produces the same ids again.

use sha2::{Digest, Sha256};

/// Id prefixes, one per kind of object.
pub mod prefix {
    /// Tenants.
    pub const TENANT: &str = "ten";
    /// Bots.
    pub const BOT: &str = "bot";
    /// Channels.
    pub const CHANNEL: &str = "ch";
    /// Users as seen by one bot.
    pub const USER: &str = "usr";
    /// Conversations (bot × user).
    pub const CONVERSATION: &str = "conv";
    /// Messages, inbound and outbound.
    pub const MESSAGE: &str = "msg";
    /// Events delivered to tenants.
    pub const EVENT: &str = "evt";
    /// Ingress envelopes.
    pub const ENVELOPE: &str = "env";
    /// Send commands.
    pub const COMMAND: &str = "cmd";
    /// API keys (the public part of the key id).
    pub const KEY: &str = "key";
    /// Templates of the registry.
    pub const TEMPLATE: &str = "tpl";
    /// Partners.
    pub const PARTNER: &str = "ptn";
    /// Partner apps.
    pub const APP: &str = "app";
    /// Apps enabled on bots.
    pub const INSTALLATION: &str = "ins";
    /// Access tokens (`POST /v1/auth/token`).
    pub const ACCESS_TOKEN: &str = "tok";
    /// Refresh tokens.
    pub const REFRESH_TOKEN: &str = "rtk";
    /// A family of tokens: one exchange of an API key and every refresh after it.
    pub const TOKEN_FAMILY: &str = "tfm";
    /// Human agents of a bot (their invites are credentials of the bot, `pbag_…`).
    pub const AGENT: &str = "agt";
    /// Media users sent (`med_` + the ULID of the message that carried it).
    pub const MEDIA: &str = "med";
}

/// The id of the media inbound message `message_id` carries: the same ULID under
/// [`prefix::MEDIA`], so `GET /v1/media/{media_id}` finds the message again.
pub fn media_id(message_id: &str) -> String {
    let ulid_part = message_id.rsplit('_').next().unwrap_or(message_id);
    format!("{}_{ulid_part}", prefix::MEDIA)
}

/// Where platforms fetch the file `media_id` that bot `bot_id` uploaded: no credentials, the
/// random part of the id is the capability.
pub fn upload_url(public_url: &str, bot_id: &str, media_id: &str) -> String {
    format!(
        "{}/media/{bot_id}/{media_id}",
        public_url.trim_end_matches('/')
    )
}

/// The message whose media `media_id` is (see [`media_id`]); `None` for anything that is not
/// a media id.
pub fn media_message_id(media_id: &str) -> Option<String> {
    let ulid_part = media_id.strip_prefix("med_")?;
    ulid::Ulid::from_string(ulid_part).ok()?;
    Some(format!("{}_{ulid_part}", prefix::MESSAGE))
}

/// A fresh, time-ordered id such as `evt_01JD5W2Q8Y3T9K6V1M4N7P0R2S`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new())
}

/// The `index`-th id derived from a ULID-based id: the same ULID plus `index`, so the result is
/// deterministic, unique per index, and still sorts by time. Ids that are not ULID-based fall
/// back to [`hashed_id`].
pub fn derive_id(prefix: &str, base: &str, index: u32) -> String {
    let ulid_part = base.rsplit('_').next().unwrap_or(base);
    match ulid::Ulid::from_string(ulid_part) {
        Ok(u) => format!(
            "{prefix}_{}",
            ulid::Ulid(u.0.wrapping_add(u128::from(index)))
        ),
        Err(_) => hashed_id(prefix, &[base, &index.to_string()]),
    }
}

/// A deterministic id from arbitrary parts: 26 Crockford base-32 characters of SHA-256.
pub fn hashed_id(prefix: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    format!("{prefix}_{}", ulid::Ulid(u128::from_be_bytes(bytes)))
}

/// A user's id: derived from the channel and the platform's user id (a user is unique per
/// channel), so an ingress can name the user before the router has stored them.
pub fn user_id(channel_id: &str, platform_user_id: &str) -> String {
    hashed_id(prefix::USER, &[channel_id, platform_user_id])
}

/// The ids of the messages a send command creates, in order. The API computes them to answer
/// 202 at once; the router computes the same ones when it stores the messages.
pub fn message_ids(bot_id: &str, command_key: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| hashed_id(prefix::MESSAGE, &[bot_id, command_key, &i.to_string()]))
        .collect()
}

/// Whether `id` has the given prefix followed by `_` and at least one more character.
pub fn has_prefix(id: &str, prefix: &str) -> bool {
    id.len() > prefix.len() + 1 && id.starts_with(prefix) && id.as_bytes()[prefix.len()] == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_ids_lead_back_to_their_message() {
        let message = new_id(prefix::MESSAGE);
        let media = media_id(&message);
        assert!(media.starts_with("med_"));
        assert_eq!(media_message_id(&media), Some(message));
        assert_eq!(media_message_id("msg_01JD5W2Q8Y3T9K6V1M4N7P0R2S"), None);
        assert_eq!(media_message_id("med_not-a-ulid"), None);
        assert_eq!(media_message_id("med_../../etc"), None);
    }

    #[test]
    fn derived_ids_are_deterministic_and_distinct() {
        let base = new_id("env");
        let a0 = derive_id("evt", &base, 0);
        let a1 = derive_id("evt", &base, 1);
        assert_eq!(a0, derive_id("evt", &base, 0));
        assert_ne!(a0, a1);
        assert!(a0 < a1, "derived ids keep time order");
        assert_eq!(&a0[4..], &base[4..], "index 0 keeps the ULID");
    }

    #[test]
    fn non_ulid_bases_are_hashed() {
        let a = derive_id("evt", "custom-key", 0);
        assert!(has_prefix(&a, "evt"));
        assert_eq!(a, derive_id("evt", "custom-key", 0));
        assert_ne!(a, derive_id("evt", "custom-key", 1));
    }

    #[test]
    fn message_ids_depend_on_bot_and_command() {
        let a = message_ids("bot_a", "cmd_1", 2);
        assert_eq!(a.len(), 2);
        assert_ne!(a[0], a[1]);
        assert_eq!(a, message_ids("bot_a", "cmd_1", 2));
        assert_ne!(a, message_ids("bot_b", "cmd_1", 2));
    }
}
