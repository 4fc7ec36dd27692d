//! What Patchbay remembers of custom channels' users beyond the router's profiles: that a user
//! was registered, and when the tokens of a user or of a whole channel were revoked. The
//! `<p>_custom_users` bucket (no TTL) holds
//!
//! * `user.<user id>` ([`UserEntry`]): written when `ingress-custom` registers the user (an
//!   atomic create, so of two registrations of a new `external_id` exactly one is the first)
//!   and when the tenant revokes the user's tokens;
//! * `channel.<channel id>` ([`ChannelEntry`]): written when the tenant revokes every token of
//!   the channel.
//!
//! `ingress-custom` reads both entries of a message's user (two direct gets, at once) and
//! refuses a token issued at or before either revocation ([`crate::token::Verified::check`]).

use async_nats::jetstream::{self, kv};
use chrono::{DateTime, Utc};
use patchbay_bus::write_at;
use patchbay_contract::V1;
use patchbay_contract::subjects::{Bucket, Subjects};
use serde::{Deserialize, Serialize};

/// `user.<user id>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEntry {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// When `ingress-custom` first registered the user (absent for a contact the tenant
    /// created whose tokens it revoked before the app registered it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<DateTime<Utc>>,
    /// Tokens of the user issued at or before this time are revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_revoked_at: Option<DateTime<Utc>>,
}

/// `channel.<channel id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelEntry {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// Tokens of the channel issued at or before this time are revoked.
    pub tokens_revoked_at: DateTime<Utc>,
}

fn user_key(user_id: &str) -> String {
    format!("user.{user_id}")
}

fn channel_key(channel_id: &str) -> String {
    format!("channel.{channel_id}")
}

/// Whether a registration was the first of its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// It was: the entry was created at this revision.
    New(u64),
    /// The user was registered before (or had its tokens revoked).
    Existing,
}

/// The custom users bucket.
#[derive(Clone)]
pub struct Users {
    kv: kv::Store,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users").finish_non_exhaustive()
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> String {
    format!("the custom users bucket: {what}: {e}")
}

impl Users {
    /// The installation's bucket (created by `patchbay migrate` and every service's start).
    pub async fn open(js: &jetstream::Context, subjects: &Subjects) -> Result<Self, String> {
        let name = subjects.bucket(Bucket::CustomUsers);
        let kv = js
            .get_key_value(&name)
            .await
            .map_err(|e| format!("cannot open the {name} bucket: {e}"))?;
        Ok(Self { kv })
    }

    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, u64)>, String> {
        let Some(entry) = self
            .kv
            .entry(key)
            .await
            .map_err(|e| unavailable("reading", e))?
        else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let value = serde_json::from_slice(&entry.value)
            .map_err(|e| format!("the custom users bucket holds an unreadable {key}: {e}"))?;
        Ok(Some((value, entry.revision)))
    }

    /// Records the registration of `user_id` at `at` unless it was registered before.
    pub async fn claim(&self, user_id: &str, at: DateTime<Utc>) -> Result<Claim, String> {
        let entry = UserEntry {
            v: V1,
            registered_at: Some(at),
            tokens_revoked_at: None,
        };
        let value = serde_json::to_vec(&entry).map_err(|e| e.to_string())?;
        match self.kv.create(user_key(user_id), value.into()).await {
            Ok(revision) => Ok(Claim::New(revision)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(Claim::Existing),
            Err(e) => Err(unavailable("registering", e)),
        }
    }

    /// Undoes [`Users::claim`] at `revision` (the registration was not published), so the
    /// app's retry is a first registration again. Best effort.
    pub async fn release(&self, user_id: &str, revision: u64) {
        if let Err(e) = self
            .kv
            .delete_expect_revision(user_key(user_id), Some(revision))
            .await
        {
            tracing::warn!(error = %e, user_id, "cannot undo a registration that was not published");
        }
    }

    /// Revokes every token of `user_id` issued until `at` (an earlier revocation stays
    /// covered: the time only moves forward). Returns the time in force.
    pub async fn revoke_user(
        &self,
        user_id: &str,
        at: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, String> {
        let key = user_key(user_id);
        loop {
            let (mut entry, revision) = self
                .read::<UserEntry>(&key)
                .await?
                .map_or((UserEntry::default(), None), |(e, r)| (e, Some(r)));
            let revoked = entry.tokens_revoked_at.map_or(at, |t| t.max(at));
            entry.tokens_revoked_at = Some(revoked);
            let value = serde_json::to_vec(&entry).map_err(|e| e.to_string())?;
            // Registered or revoked meanwhile: read again.
            if write_at(&self.kv, &key, value.into(), revision)
                .await
                .map_err(|e| unavailable("revoking", e))?
                .is_some()
            {
                return Ok(revoked);
            }
        }
    }

    /// Revokes every token of `channel_id` issued until `at`. Returns the time in force.
    pub async fn revoke_channel(
        &self,
        channel_id: &str,
        at: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, String> {
        let key = channel_key(channel_id);
        loop {
            let current = self.read::<ChannelEntry>(&key).await?;
            let revoked = current
                .as_ref()
                .map_or(at, |(e, _)| e.tokens_revoked_at.max(at));
            let value = serde_json::to_vec(&ChannelEntry {
                v: V1,
                tokens_revoked_at: revoked,
            })
            .map_err(|e| e.to_string())?;
            if write_at(&self.kv, &key, value.into(), current.map(|(_, r)| r))
                .await
                .map_err(|e| unavailable("revoking", e))?
                .is_some()
            {
                return Ok(revoked);
            }
        }
    }

    /// The latest revocation covering `user_id`'s tokens on `channel_id` (the user's or the
    /// channel's), in Unix ms.
    pub async fn revoked_at_ms(
        &self,
        channel_id: &str,
        user_id: &str,
    ) -> Result<Option<i64>, String> {
        let (user_key, channel_key) = (user_key(user_id), channel_key(channel_id));
        let (user, channel) = futures::join!(
            self.read::<UserEntry>(&user_key),
            self.read::<ChannelEntry>(&channel_key),
        );
        let user = user?.and_then(|(e, _)| e.tokens_revoked_at);
        let channel = channel?.map(|(e, _)| e.tokens_revoked_at);
        Ok(user
            .into_iter()
            .chain(channel)
            .map(|t| t.timestamp_millis())
            .max())
    }

    /// When `user_id` was registered (`None`: it never was, or its entry holds no time).
    pub async fn registered_at(&self, user_id: &str) -> Result<Option<DateTime<Utc>>, String> {
        Ok(self
            .read::<UserEntry>(&user_key(user_id))
            .await?
            .and_then(|(e, _)| e.registered_at))
    }
}
