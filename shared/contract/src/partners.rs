//! Partner apps: one integration that many organisations enable (Web1on1's bot store,
//! UChat's partner API). A partner (`ptn_…`, its own key `ppk_…`) publishes apps (`app_…`):
//! a callback URL, the events it subscribes to and the scopes it asks for. A bot's owner
//! enables an app on the bot (all its channels, or some) with one call: an installation
//! (`ins_…`). Events of every installation's bot (and channel) reach the app's callback,
//! signed with the app's secret and naming the installation, the tenant and the bot; the
//! partner takes an access token per installation, with the app's scopes, and sends on the
//! bot's behalf only through the installation's channels. Disabling the app ends both.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::content::FieldError;
use crate::wire::SealedSecret;

/// What a partner publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppDef {
    /// Shown to the organisations that enable it: 1 to 100 characters.
    pub name: String,
    /// What it does, at most 1000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where the events of every installation go (`https://`, or `http://` where the operator
    /// allows private callbacks).
    pub callback_url: String,
    /// The events it subscribes to, as a bot's webhook does (`message.*`, `user.subscribed`,
    /// `*`); at least one.
    pub events: Vec<String>,
    /// The scopes its access tokens carry on each installation's bot
    /// ([`crate::scopes`]; `settings:keys` is never granted to a partner).
    pub scopes: Vec<String>,
}

impl AppDef {
    /// Checks everything but the callback URL's address (the service checks that); the error
    /// names the field.
    pub fn check(&self, known_events: &[&str]) -> Result<(), FieldError> {
        let name = self.name.trim();
        if name.is_empty() || self.name.chars().count() > 100 {
            return Err(FieldError::new("name", "must be 1 to 100 characters"));
        }
        if self
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > 1000)
        {
            return Err(FieldError::new(
                "description",
                "must be at most 1000 characters",
            ));
        }
        let url_ok = (self.callback_url.starts_with("https://")
            || self.callback_url.starts_with("http://"))
            && self.callback_url.len() <= 2048;
        if !url_ok {
            return Err(FieldError::new("callback_url", "must be an http(s) URL"));
        }
        if self.events.is_empty() {
            return Err(FieldError::new("events", "subscribe to at least one event"));
        }
        if let Some(bad) = self
            .events
            .iter()
            .find(|e| !known_events.contains(&e.as_str()))
        {
            return Err(FieldError::new(
                "events",
                format!("unknown event {bad:?}; known: {}", known_events.join(", ")),
            ));
        }
        if self.scopes.is_empty() {
            return Err(FieldError::new("scopes", "ask for at least one scope"));
        }
        crate::scopes::check(&self.scopes).map_err(|m| FieldError::new("scopes", m))?;
        if crate::scopes::grants(Some(&self.scopes), "settings:keys") {
            return Err(FieldError::new(
                "scopes",
                "settings:keys is never granted to a partner: an app cannot rotate or revoke \
                 its installations' keys",
            ));
        }
        Ok(())
    }
}

/// A published app, as its partner and the organisations that may enable it see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct App {
    /// `app_…`.
    pub id: String,
    /// The partner (`ptn_…`).
    pub partner_id: String,
    /// The partner's name.
    pub partner_name: String,
    /// The definition.
    #[serde(flatten)]
    pub def: AppDef,
    /// When it was published.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// An app just published: its secret, shown once, signs the events it receives (Standard
/// Webhooks, as a bot's webhook secret does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CreatedApp {
    /// The app.
    #[serde(flatten)]
    pub app: App,
    /// `whsec_…`.
    pub webhook_secret: String,
}

/// A partner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Partner {
    /// `ptn_…`.
    pub id: String,
    /// Its name.
    pub name: String,
    /// When the operator added it.
    pub created_at: DateTime<Utc>,
}

/// A partner just added: its key, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CreatedPartner {
    /// The partner.
    #[serde(flatten)]
    pub partner: Partner,
    /// `ppk_…`: the Bearer of every `/v1/partner` route.
    pub api_key: String,
}

/// An app enabled on a bot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Installation {
    /// `ins_…`.
    pub id: String,
    /// The app.
    pub app_id: String,
    /// Its name.
    pub app_name: String,
    /// Its partner.
    pub partner_id: String,
    /// The organisation that enabled it.
    pub tenant_id: String,
    /// Its bot.
    pub bot_id: String,
    /// The channels it is enabled on; `None`: every channel of the bot, new ones included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// The scopes its access tokens carry (the app's).
    pub scopes: Vec<String>,
    /// The events it receives (the app's).
    pub events: Vec<String>,
    /// When it was enabled.
    pub created_at: DateTime<Utc>,
}

/// An installation as the bot's record carries it, for the router (which events go to the
/// app) and the dispatcher (where and how signed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InstallationRef {
    /// `ins_…`.
    pub id: String,
    /// The app.
    pub app_id: String,
    /// Its partner.
    pub partner_id: String,
    /// The channels; `None`: every channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// The app's subscriptions.
    pub events: Vec<String>,
    /// The app's scopes: an answer to its callback sends messages only with `messages:send`.
    pub scopes: Vec<String>,
    /// The app's callback.
    pub callback_url: String,
    /// The app's webhook secret, sealed.
    pub secret: SealedSecret,
}

impl InstallationRef {
    /// Whether an event of `event_type` on `channel_id` goes to the app. An event on no
    /// channel (a broadcast's, which may span them) goes to apps enabled on every channel.
    pub fn accepts(&self, event_type: crate::EventType, channel_id: Option<&str>) -> bool {
        crate::wire::subscribed(&self.events, event_type)
            && match (&self.channels, channel_id) {
                (None, _) => true,
                (Some(c), Some(channel_id)) => c.iter().any(|id| id == channel_id),
                (Some(_), None) => false,
            }
    }
}

/// Who an event delivered to a partner is for: the installation, its app, the organisation
/// and (in the event itself) the bot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InstallationContext {
    /// `ins_…`.
    pub id: String,
    /// The app.
    pub app_id: String,
    /// The organisation that enabled it.
    pub tenant_id: String,
}

/// One operation on partners, apps and installations (auth's `partners`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PartnerOp {
    /// The operator adds a partner → [`CreatedPartner`].
    CreatePartner {
        /// Its name.
        name: String,
    },
    /// Every partner → a list of [`Partner`].
    ListPartners,
    /// The partner a key belongs to → [`Partner`] (401 for no partner's key).
    Authenticate {
        /// `ppk_…`.
        api_key: String,
    },
    /// A partner publishes an app → [`CreatedApp`].
    CreateApp {
        /// The partner.
        partner_id: String,
        /// The app.
        app: AppDef,
    },
    /// A partner's apps → a list of [`App`].
    ListApps {
        /// The partner.
        partner_id: String,
    },
    /// One app → [`App`]: a partner's own (with `partner_id`), or any for an organisation
    /// deciding to enable it.
    GetApp {
        /// The app.
        app_id: String,
        /// Only the partner's own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partner_id: Option<String>,
    },
    /// A partner replaces an app's definition → [`App`]; every installation follows.
    ReplaceApp {
        /// The partner.
        partner_id: String,
        /// The app.
        app_id: String,
        /// The new definition.
        app: AppDef,
    },
    /// A partner withdraws an app → `null`; every installation ends.
    DeleteApp {
        /// The partner.
        partner_id: String,
        /// The app.
        app_id: String,
    },
    /// A bot's owner enables an app → [`Installation`] (again: the channels change).
    Enable {
        /// The bot.
        bot_id: String,
        /// The app.
        app_id: String,
        /// Some of the bot's channels; `None`: all.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channels: Option<Vec<String>>,
    },
    /// A bot's owner disables an app → `null`: its events stop, its tokens stop working.
    Disable {
        /// The bot.
        bot_id: String,
        /// The app.
        app_id: String,
    },
    /// The installations of a bot, or of a partner's apps → a list of [`Installation`].
    Installations {
        /// A bot's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bot_id: Option<String>,
        /// A partner's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partner_id: Option<String>,
    },
    /// A partner takes an access token for one of its installations →
    /// [`crate::IssuedAccessToken`].
    InstallationToken {
        /// The partner.
        partner_id: String,
        /// The installation.
        installation_id: String,
    },
}

/// A request to auth's `partners` operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PartnerRequest {
    /// Payload version.
    #[serde(default)]
    pub v: crate::V1,
    /// What to do.
    pub op: PartnerOp,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KNOWN: &[&str] = &["*", "message.*", "message.received", "user.*"];

    #[test]
    fn an_app_names_what_is_wrong_with_it() {
        let ok: AppDef = serde_json::from_value(json!({"name": "CRM sync",
            "callback_url": "https://crm.example/hook", "events": ["message.*"],
            "scopes": ["messages:send", "users:read"]}))
        .unwrap();
        assert_eq!(ok.check(KNOWN), Ok(()));
        for (change, field) in [
            (json!({"name": ""}), "name"),
            (json!({"callback_url": "crm.example"}), "callback_url"),
            (json!({"events": []}), "events"),
            (json!({"events": ["message.nope"]}), "events"),
            (json!({"scopes": []}), "scopes"),
            (json!({"scopes": ["messages:fly"]}), "scopes"),
            (json!({"scopes": ["settings:*"]}), "scopes"),
            (json!({"scopes": ["*"]}), "scopes"),
        ] {
            let mut v = serde_json::to_value(&ok).unwrap();
            for (k, x) in change.as_object().unwrap() {
                v[k] = x.clone();
            }
            let app: AppDef = serde_json::from_value(v).unwrap();
            assert_eq!(app.check(KNOWN).unwrap_err().field, field, "{change}");
        }
    }

    #[test]
    fn an_installation_takes_its_apps_events_on_its_channels() {
        let mut i = InstallationRef {
            id: "ins_1".into(),
            app_id: "app_1".into(),
            partner_id: "ptn_1".into(),
            channels: None,
            events: vec!["message.*".into()],
            scopes: vec!["messages:send".into()],
            callback_url: "https://crm.example/hook".into(),
            secret: SealedSecret {
                sealed: String::new(),
                expires_at: None,
            },
        };
        assert!(i.accepts(crate::EventType::MessageReceived, Some("ch_a")));
        assert!(!i.accepts(crate::EventType::UserSubscribed, Some("ch_a")));
        i.events.push("broadcast.*".into());
        assert!(i.accepts(crate::EventType::BroadcastCompleted, None));
        i.channels = Some(vec!["ch_b".into()]);
        assert!(!i.accepts(crate::EventType::MessageReceived, Some("ch_a")));
        assert!(i.accepts(crate::EventType::MessageReceived, Some("ch_b")));
        // Limited to some channels: a broadcast (which may span others) is not its business.
        assert!(!i.accepts(crate::EventType::BroadcastCompleted, None));
    }
}
