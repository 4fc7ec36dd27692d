//! Broadcasts (`/v1/broadcasts`): one message to many users of a bot. The tenant asks for an
//! audience and content; `bot-router` stores the broadcast, expands the audience into one
//! recipient row each (durable before anything goes out), and releases them into the send path
//! a window at a time, each with an id derived from the broadcast and the user, so a recipient
//! gets it once however often a release is repeated. Senders pace broadcast messages behind the
//! bot's conversations (`<p>.bulk.<platform>.<channel>`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::content::{Content, FieldError, TemplateMessage, TemplateRef};
use crate::fields::Fields;
use crate::wire::{Platform, V1};

/// The most users an explicit audience may list.
pub const MAX_LISTED_USERS: usize = 10_000;

/// The most channels or platforms an audience may name.
pub const MAX_LISTED: usize = 100;

/// The error codes a recipient is skipped with (never sent, not a failure): the audience or
/// the platform's rules left it out.
pub const SKIP_REASONS: &[&str] = &[
    UNSUBSCRIBED,
    OPTED_OUT,
    CANCELLED,
    crate::windows::OUTSIDE_WINDOW,
    crate::windows::QUOTA_EXCEEDED,
    crate::wire::HUMAN_HANDOVER,
];

/// Skipped: the user blocked the bot or unsubscribed.
pub const UNSUBSCRIBED: &str = "unsubscribed";
/// Skipped: the bot marked the user as opted out of broadcasts (`PATCH /v1/users/{id}`).
pub const OPTED_OUT: &str = "opted_out";
/// Skipped: the broadcast was cancelled before the message went out.
pub const CANCELLED: &str = "cancelled";

/// Whether a recipient whose message failed with `code` was skipped rather than failed.
pub fn is_skip(code: &str) -> bool {
    SKIP_REASONS.contains(&code)
}

/// Who a broadcast goes to. `users` lists them; otherwise every subscribed user of the bot
/// (`all`), narrowed by every filter given: some `channels`, some `platforms`, contact
/// `fields` that must all hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Audience {
    /// Every subscribed user of the bot.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    /// The users of these channels (`ch_…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// The users on these platforms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platforms: Option<Vec<Platform>>,
    /// These users (`usr_…`), at most 10,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<String>>,
    /// The users whose contact fields hold every one of these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Fields>,
}

impl Audience {
    /// Checks its shape; the error names the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        let filtered = self.channels.is_some() || self.platforms.is_some() || self.fields.is_some();
        match &self.users {
            Some(_) if self.all || filtered => {
                return Err(FieldError::new(
                    "users",
                    "a list of users cannot be combined with all, channels, platforms or fields",
                ));
            }
            Some(users) if users.is_empty() || users.len() > MAX_LISTED_USERS => {
                return Err(FieldError::new(
                    "users",
                    format!("must list 1 to {MAX_LISTED_USERS} users"),
                ));
            }
            Some(users) => {
                if let Some(bad) = users.iter().find(|u| !is_id(u, "usr_")) {
                    return Err(FieldError::new(
                        "users",
                        format!("{bad:?} is not a user id (usr_…)"),
                    ));
                }
            }
            None if !self.all && !filtered => {
                return Err(FieldError::new(
                    "audience",
                    "name the recipients: all, channels, platforms, fields or users",
                ));
            }
            None => {}
        }
        if let Some(channels) = &self.channels {
            if channels.is_empty() || channels.len() > MAX_LISTED {
                return Err(FieldError::new(
                    "channels",
                    format!("must name 1 to {MAX_LISTED} channels"),
                ));
            }
            if let Some(bad) = channels.iter().find(|c| !is_id(c, "ch_")) {
                return Err(FieldError::new(
                    "channels",
                    format!("{bad:?} is not a channel id (ch_…)"),
                ));
            }
        }
        if let Some(platforms) = &self.platforms
            && (platforms.is_empty() || platforms.len() > MAX_LISTED)
        {
            return Err(FieldError::new(
                "platforms",
                format!("must name 1 to {MAX_LISTED} platforms"),
            ));
        }
        if let Some(fields) = &self.fields {
            if fields.is_empty() {
                return Err(FieldError::new("fields", "must name at least one field"));
            }
            for (name, value) in fields {
                crate::fields::check_name(name)
                    .map_err(|m| FieldError::new(format!("fields.{name}"), m))?;
                crate::fields::check_value(value)
                    .map_err(|m| FieldError::new(format!("fields.{name}"), m))?;
            }
        }
        Ok(())
    }
}

fn is_id(s: &str, prefix: &str) -> bool {
    s.starts_with(prefix)
        && s.len() <= 64
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A registry template for every recipient, rendered for each one's channel and contact
/// fields, with the values of the template's own variables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BroadcastTemplate {
    /// `tpl_…`.
    pub id: String,
    /// Values of the template's own variables (`{{PlanTime}}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
}

/// A broadcast as the tenant asks for it (`POST /v1/broadcasts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BroadcastSpec {
    /// Who it goes to.
    pub audience: Audience,
    /// What each recipient gets: 1 to 10 messages of the content model. Either this or
    /// `template`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<Content>,
    /// A registry template instead of `messages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<BroadcastTemplate>,
    /// When to start; now when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<DateTime<Utc>>,
}

impl BroadcastSpec {
    /// The messages every recipient is sent (a template becomes a registry template message).
    pub fn contents(&self) -> Vec<Content> {
        match &self.template {
            Some(t) => vec![Content::Template(TemplateMessage::Registered(
                TemplateRef {
                    id: t.id.clone(),
                    meta: t.variables.clone(),
                },
            ))],
            None => self.messages.clone(),
        }
    }

    /// Checks its shape; the error names the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        self.audience.validate().map_err(|e| e.within("audience"))?;
        match (&self.template, self.messages.len()) {
            (Some(_), 0) => {}
            (Some(_), _) => {
                return Err(FieldError::new(
                    "messages",
                    "give either messages or a template, not both",
                ));
            }
            (None, 1..=10) => {}
            (None, _) => {
                return Err(FieldError::new(
                    "messages",
                    "must have between 1 and 10 entries (or give a template)",
                ));
            }
        }
        for (i, m) in self.contents().iter().enumerate() {
            if matches!(m, Content::Field(_)) {
                return Err(FieldError::new(
                    format!("messages[{i}]"),
                    "a field message sets one user's contact field: it cannot be broadcast",
                ));
            }
            m.validate().map_err(|e| {
                if self.template.is_some() {
                    e.within("template")
                } else {
                    e.within(&format!("messages[{i}]"))
                }
            })?;
        }
        Ok(())
    }
}

/// Where a broadcast is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BroadcastState {
    /// Waiting for its start time.
    Scheduled,
    /// Its audience is being stored, one recipient at a time (the first ones may already be
    /// going out).
    Queueing,
    /// Every recipient is stored; messages are going out.
    Sending,
    /// Nothing more goes out until it is resumed (the few already handed to a sender do).
    Paused,
    /// Stopped for good: recipients not yet sent to are skipped (`cancelled`).
    Cancelled,
    /// Every recipient was sent to, failed or skipped.
    Completed,
}

impl BroadcastState {
    /// Its stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            BroadcastState::Scheduled => "scheduled",
            BroadcastState::Queueing => "queueing",
            BroadcastState::Sending => "sending",
            BroadcastState::Paused => "paused",
            BroadcastState::Cancelled => "cancelled",
            BroadcastState::Completed => "completed",
        }
    }

    /// From its stored name.
    pub fn from_stored(s: &str) -> Option<Self> {
        [
            BroadcastState::Scheduled,
            BroadcastState::Queueing,
            BroadcastState::Sending,
            BroadcastState::Paused,
            BroadcastState::Cancelled,
            BroadcastState::Completed,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// Whether nothing more happens to it.
    pub fn is_final(self) -> bool {
        matches!(self, BroadcastState::Cancelled | BroadcastState::Completed)
    }
}

/// How many recipients are where: `recipients` = `queued` + `sending` + `sent` + `failed` +
/// `skipped`. `sent` counts every recipient whose messages the platform
/// accepted (including those later delivered or read), `delivered` those the platform reported
/// delivered (including read), `read` those it reported read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BroadcastCounts {
    /// Everyone in the audience.
    pub recipients: i64,
    /// Waiting to be handed to the send path.
    pub queued: i64,
    /// Handed to the send path, waiting for the platform's pace or answer (at most
    /// `PATCHBAY_BROADCAST_WINDOW`).
    pub sending: i64,
    /// Accepted by the platform.
    pub sent: i64,
    /// Reported delivered by the platform (where it reports that).
    pub delivered: i64,
    /// Reported read by the platform (where it reports that).
    pub read: i64,
    /// Failed (see `failed_reasons`).
    pub failed: i64,
    /// Left out (see `skipped_reasons`).
    pub skipped: i64,
}

/// A broadcast as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Broadcast {
    /// `brd_…`.
    pub id: String,
    /// The bot.
    pub bot_id: String,
    /// Where it is.
    pub state: BroadcastState,
    /// How many recipients are where.
    pub counts: BroadcastCounts,
    /// Failed recipients by error code.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed_reasons: BTreeMap<String, i64>,
    /// Skipped recipients by reason (`unsubscribed`, `opted_out`, `outside_window`,
    /// `human_handover`, `cancelled`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub skipped_reasons: BTreeMap<String, i64>,
    /// Who it goes to.
    pub audience: Audience,
    /// What it sends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<Content>,
    /// The template it sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<BroadcastTemplate>,
    /// When it starts (or started).
    pub start_at: DateTime<Utc>,
    /// When it was asked for.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When it completed or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

/// A broadcast as its events (`broadcast.progress`, `broadcast.completed`) name it: where it
/// is and its counts, and on `broadcast.completed` the reasons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BroadcastSummary {
    /// `brd_…`.
    pub id: String,
    /// Where it is (`completed` or `cancelled` on `broadcast.completed`).
    pub state: BroadcastState,
    /// How many recipients are where.
    pub counts: BroadcastCounts,
    /// Failed recipients by error code (on `broadcast.completed`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed_reasons: BTreeMap<String, i64>,
    /// Skipped recipients by reason (on `broadcast.completed`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub skipped_reasons: BTreeMap<String, i64>,
    /// When it completed or was cancelled (on `broadcast.completed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<Broadcast> for BroadcastSummary {
    fn from(b: Broadcast) -> Self {
        Self {
            id: b.id,
            state: b.state,
            counts: b.counts,
            failed_reasons: b.failed_reasons,
            skipped_reasons: b.skipped_reasons,
            finished_at: b.finished_at,
        }
    }
}

impl BroadcastCounts {
    /// Recipients with an outcome (sent, failed or skipped).
    pub fn done(&self) -> i64 {
        self.sent + self.failed + self.skipped
    }
}

/// A page of a bot's broadcasts, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BroadcastPage {
    /// The broadcasts.
    pub items: Vec<Broadcast>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A change of course.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BroadcastAction {
    /// Stop for good.
    Cancel,
    /// Hold what has not gone out.
    Pause,
    /// Go on after a pause.
    Resume,
}

/// The broadcasts' operations, always within the asking bot (`<p>.rpc.router.broadcasts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BroadcastRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// The bot asking.
    pub bot_id: String,
    /// What to do.
    pub op: BroadcastOp,
}

/// One operation on a bot's broadcasts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BroadcastOp {
    /// Store a new broadcast under `id` (asking again with the same id answers the stored
    /// one). Answers the [`Broadcast`].
    Create {
        /// `brd_…`.
        id: String,
        /// What was asked, checked.
        spec: BroadcastSpec,
    },
    /// One broadcast. Answers the [`Broadcast`].
    Get {
        /// `brd_…`.
        id: String,
    },
    /// A page of the bot's broadcasts, newest first. Answers a [`BroadcastPage`].
    List {
        /// The last id of the previous page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        /// 1 to 100.
        limit: u32,
    },
    /// Cancel, pause or resume. Answers the [`Broadcast`] (409 `broadcast_finished` once it
    /// completed or was cancelled).
    Control {
        /// `brd_…`.
        id: String,
        /// What to do.
        action: BroadcastAction,
    },
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn spec(json: serde_json::Value) -> Result<BroadcastSpec, String> {
        let spec: BroadcastSpec = serde_json::from_value(json).map_err(|e| e.to_string())?;
        spec.validate()
            .map_err(|e| format!("{}: {}", e.field, e.message))?;
        Ok(spec)
    }

    #[test]
    fn an_audience_names_its_recipients_one_way() {
        let text = serde_json::json!([{"type": "text", "text": "hi"}]);
        for ok in [
            serde_json::json!({"all": true}),
            serde_json::json!({"channels": ["ch_1"]}),
            serde_json::json!({"platforms": ["telegram"], "fields": {"plan": "gold"}}),
            serde_json::json!({"users": ["usr_1", "usr_2"]}),
        ] {
            spec(serde_json::json!({"audience": ok, "messages": text})).unwrap();
        }
        for (bad, field) in [
            (serde_json::json!({}), "audience.audience"),
            (
                serde_json::json!({"users": ["usr_1"], "all": true}),
                "audience.users",
            ),
            (serde_json::json!({"users": []}), "audience.users"),
            (serde_json::json!({"users": ["u 1"]}), "audience.users"),
            (
                serde_json::json!({"channels": ["x.y"]}),
                "audience.channels",
            ),
            (serde_json::json!({"fields": {}}), "audience.fields"),
        ] {
            let e = spec(serde_json::json!({"audience": bad, "messages": text})).unwrap_err();
            assert!(e.starts_with(field), "{bad}: {e}");
        }
    }

    #[test]
    fn a_broadcast_sends_messages_or_a_template() {
        let all = serde_json::json!({"all": true});
        let t = spec(serde_json::json!({"audience": all,
            "template": {"id": "tpl_1", "variables": {"When": "3 pm"}}}))
        .unwrap();
        assert_eq!(
            serde_json::to_value(t.contents()).unwrap(),
            serde_json::json!([{"type": "template", "id": "tpl_1", "meta": {"When": "3 pm"}}])
        );
        assert!(spec(serde_json::json!({"audience": all})).is_err());
        assert!(
            spec(
                serde_json::json!({"audience": all, "template": {"id": "tpl_1"},
                "messages": [{"type": "text", "text": "x"}]})
            )
            .is_err()
        );
        let e =
            spec(serde_json::json!({"audience": all, "messages": [{"type": "text", "text": ""}]}))
                .unwrap_err();
        assert!(e.starts_with("messages[0]"), "{e}");
    }

    #[test]
    fn skips_are_told_apart_from_failures() {
        assert!(is_skip("outside_window"));
        assert!(is_skip("cancelled"));
        assert!(!is_skip("platform_unavailable"));
        for s in [
            BroadcastState::Scheduled,
            BroadcastState::Paused,
            BroadcastState::Completed,
        ] {
            assert_eq!(BroadcastState::from_stored(s.as_str()), Some(s));
        }
    }
}
