//! Messaging windows: how long after a user's last message a platform lets a bot send
//! free-form messages, and what it still allows afterwards. Each platform crate defines its
//! [`WindowPolicy`] (its `PlatformSpec`); the router refuses a send, or substitutes the bot's
//! fallback template, before any platform call, and the API refuses it synchronously when it
//! can tell. This module holds the rules' arithmetic and the refusal's wording.
//!
//! Windows count from the platform's timestamp of the user's last message (what the platforms
//! count from); a window is open while `now < last + window` and closed from that instant on.

use chrono::{DateTime, TimeDelta, Utc};

use crate::content::Content;
use crate::wire::{DeliveryError, Platform, SendSource};

/// The code of a send refused because the platform's window is closed.
pub const OUTSIDE_WINDOW: &str = "outside_window";
/// The code of a send refused because the user's message allows no more (WeChat's five
/// customer-service messages per message from the user).
pub const QUOTA_EXCEEDED: &str = "rate_limited";

/// One platform's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowPolicy {
    /// The platform.
    pub platform: Platform,
    /// Free-form messages are allowed until this many seconds after the user's last message;
    /// `None`: there is no window.
    pub window_secs: Option<i64>,
    /// Whether template messages may be sent outside the window.
    pub templates_outside: bool,
    /// A human agent's message (`SendSource::Human`) may be sent until this many seconds after
    /// the user's last message (Messenger's `HUMAN_AGENT` tag).
    pub human_agent_secs: Option<i64>,
    /// Informational: a reply token stays valid this long (LINE); the sender falls back to a
    /// push message afterwards, so nothing is refused.
    pub reply_token_secs: Option<i64>,
    /// Free-form messages the bot may send per message from the user, inside the window
    /// (WeChat: five customer-service messages); templates do not count. `None`: no quota.
    pub per_inbound: Option<u32>,
    /// Whether the platform sends what the bot starts outside the window at a charge instead
    /// of refusing it (Viber's 24-hour session): such sends go out when the bot's settings
    /// for the platform allow them ([`WindowPolicy::allowing_billed`]), else they are refused.
    pub billed_outside: bool,
    /// Whether this bot allows billed sends outside the window (its
    /// `platform_settings.<platform>.send_outside_window`); only with
    /// [`WindowPolicy::billed_outside`].
    pub billed_allowed: bool,
    /// How people call the window, for error messages.
    pub name: &'static str,
}

/// Seconds in an hour.
pub const HOUR: i64 = 3600;
/// Seconds in a day.
pub const DAY: i64 = 24 * HOUR;

impl WindowPolicy {
    /// A platform without a window: the bot may always write.
    pub const fn none(platform: Platform, name: &'static str) -> Self {
        Self {
            platform,
            window_secs: None,
            templates_outside: false,
            human_agent_secs: None,
            reply_token_secs: None,
            per_inbound: None,
            billed_outside: false,
            billed_allowed: false,
            name,
        }
    }

    /// This policy for a bot that does (or does not) allow billed sends outside the window;
    /// no change for platforms that refuse them anyway.
    pub const fn allowing_billed(self, allowed: bool) -> Self {
        Self {
            billed_allowed: allowed && self.billed_outside,
            ..self
        }
    }

    /// The error of a free-form message over the quota of [`WindowPolicy::per_inbound`]:
    /// code [`QUOTA_EXCEEDED`], and a message that says how many were sent since when.
    pub fn over_quota(&self, sent: u32, since: DateTime<Utc>) -> DeliveryError {
        let quota = self.per_inbound.unwrap_or(0);
        DeliveryError {
            code: QUOTA_EXCEEDED.to_owned(),
            message: format!(
                "over the quota of {}: {quota} free-form messages per message from the user, and {sent} were sent since the user's last message at {}; templates can still be sent, or wait until the user writes again",
                self.name,
                since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            platform_code: None,
        }
    }
}

/// What the window allows for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The platform has no window.
    Unlimited,
    /// Inside the window, which closes at `closes_at`.
    Open {
        /// When it closes unless the user writes again.
        closes_at: DateTime<Utc>,
    },
    /// Outside the window, but templates are allowed.
    Template,
    /// Outside the standard window; a human agent's message is allowed, sent with Messenger's
    /// `HUMAN_AGENT` tag, until `until`.
    HumanAgent {
        /// When that stops.
        until: DateTime<Utc>,
    },
    /// Outside the window, sent at a charge because the bot allows it (Viber's bot-initiated
    /// messages outside the 24-hour session).
    Billed {
        /// When the window closed (`None`: no user message ever opened it).
        closed_at: Option<DateTime<Utc>>,
    },
    /// Refused: the window closed at `closed_at` (`None`: no user message ever opened it).
    Closed {
        /// When it closed.
        closed_at: Option<DateTime<Utc>>,
    },
}

impl Verdict {
    /// Whether the message may be sent.
    pub fn allowed(&self) -> bool {
        !matches!(self, Verdict::Closed { .. })
    }
}

impl WindowPolicy {
    /// What the window allows for `content` from `source`, `now`, when the user last wrote at
    /// `last_inbound` (the platform's timestamp; `None`: never).
    pub fn check(
        &self,
        last_inbound: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        content: &Content,
        source: SendSource,
    ) -> Verdict {
        // A field message never reaches the platform: no window applies to it.
        let Some(window) = self
            .window_secs
            .filter(|_| !matches!(content, Content::Field(_)))
        else {
            return Verdict::Unlimited;
        };
        let closes_at = last_inbound.map(|t| t + TimeDelta::seconds(window));
        if let Some(c) = closes_at
            && now < c
        {
            return Verdict::Open { closes_at: c };
        }
        if self.templates_outside && matches!(content, Content::Template(_)) {
            return Verdict::Template;
        }
        if self.billed_allowed {
            return Verdict::Billed {
                closed_at: closes_at,
            };
        }
        if source == SendSource::Human
            && let (Some(secs), Some(last)) = (self.human_agent_secs, last_inbound)
        {
            let until = last + TimeDelta::seconds(secs);
            if now < until {
                return Verdict::HumanAgent { until };
            }
            return Verdict::Closed {
                closed_at: Some(until),
            };
        }
        Verdict::Closed {
            closed_at: closes_at,
        }
    }

    /// Whether a free-form message from `source` may go `now` (what decides a registry
    /// template's `text` form over the platform's own).
    pub fn takes_free_form(
        &self,
        last_inbound: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        source: SendSource,
    ) -> bool {
        let text = Content::Text {
            text: String::new(),
        };
        self.check(last_inbound, now, &text, source).allowed()
    }

    /// The error a refused send reports: code [`OUTSIDE_WINDOW`], and a message that says
    /// which window closed when (RFC 3339) and what is still allowed.
    pub fn refusal(&self, closed_at: Option<DateTime<Utc>>) -> DeliveryError {
        let when = match closed_at {
            Some(t) => format!(
                "closed at {}",
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            None => "was never opened by a message from the user".to_owned(),
        };
        let still = match (self.templates_outside, self.human_agent_secs) {
            (true, Some(secs)) => format!(
                "; only templates, or a human agent's messages (source human) within {} days of the user's last message, can be sent until the user writes again",
                secs / DAY
            ),
            (true, None) => "; only templates can be sent until the user writes again".into(),
            (false, Some(secs)) => format!(
                "; only a human agent's messages (source human) within {} days of the user's last message can be sent until the user writes again",
                secs / DAY
            ),
            _ if self.billed_outside => format!(
                "; messages the bot starts outside it are billed, and this bot does not allow them (platform_settings.{platform}.send_outside_window)",
                platform = self.platform
            ),
            _ => "; nothing can be sent until the user writes again".into(),
        };
        DeliveryError {
            code: OUTSIDE_WINDOW.to_owned(),
            message: format!("outside {}, which {when}{still}", self.name),
            platform_code: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::Template;

    /// A window with templates outside it and a week for human agents (the richest rules).
    const RICH: WindowPolicy = WindowPolicy {
        platform: Platform::Messenger,
        window_secs: Some(DAY),
        templates_outside: true,
        human_agent_secs: Some(7 * DAY),
        reply_token_secs: None,
        per_inbound: None,
        billed_outside: false,
        billed_allowed: false,
        name: "a 24-hour window",
    };
    /// A window with templates outside it only.
    const TEMPLATES: WindowPolicy = WindowPolicy {
        human_agent_secs: None,
        name: "a 24-hour customer-service window",
        ..RICH
    };

    fn text() -> Content {
        Content::Text { text: "hi".into() }
    }

    fn template() -> Content {
        Content::Template(Template::with_body("order_ready", "en_US", &[]).into())
    }

    fn t0() -> DateTime<Utc> {
        "2026-11-20T10:00:00Z".parse().unwrap()
    }

    fn check(p: &WindowPolicy, after: TimeDelta, content: &Content, source: SendSource) -> Verdict {
        p.check(Some(t0()), t0() + after, content, source)
    }

    const MS: TimeDelta = TimeDelta::milliseconds(1);

    #[test]
    fn a_window_closes_at_its_end_except_for_templates() {
        let api = SendSource::Api;
        let day = TimeDelta::hours(24);
        assert_eq!(
            check(&TEMPLATES, day - MS, &text(), api),
            Verdict::Open {
                closes_at: t0() + day
            }
        );
        assert_eq!(
            check(&TEMPLATES, day, &text(), api),
            Verdict::Closed {
                closed_at: Some(t0() + day)
            }
        );
        assert_eq!(check(&TEMPLATES, day, &template(), api), Verdict::Template);
        // No human-agent allowance: a human gets nothing more.
        assert!(!check(&TEMPLATES, day, &text(), SendSource::Human).allowed());
        // Templates are fine inside the window too.
        assert!(check(&TEMPLATES, day - MS, &template(), api).allowed());
    }

    #[test]
    fn a_human_agent_allowance_extends_the_window_for_human_messages_only() {
        let day = TimeDelta::hours(24);
        let week = TimeDelta::days(7);
        assert!(check(&RICH, day - MS, &text(), SendSource::Api).allowed());
        assert_eq!(
            check(&RICH, day, &text(), SendSource::Api),
            Verdict::Closed {
                closed_at: Some(t0() + day)
            }
        );
        assert_eq!(
            check(&RICH, day, &text(), SendSource::Human),
            Verdict::HumanAgent { until: t0() + week }
        );
        assert_eq!(
            check(&RICH, week - MS, &text(), SendSource::Human),
            Verdict::HumanAgent { until: t0() + week }
        );
        assert_eq!(
            check(&RICH, week, &text(), SendSource::Human),
            Verdict::Closed {
                closed_at: Some(t0() + week)
            }
        );
        // Inside the standard window a human's message needs no tag.
        assert!(matches!(
            check(&RICH, day - MS, &text(), SendSource::Human),
            Verdict::Open { .. }
        ));
    }

    #[test]
    fn a_billed_window_sends_outside_it_only_when_the_bot_allows() {
        const BILLED: WindowPolicy = WindowPolicy {
            platform: Platform::Viber,
            window_secs: Some(DAY),
            templates_outside: false,
            human_agent_secs: None,
            reply_token_secs: None,
            per_inbound: None,
            billed_outside: true,
            billed_allowed: false,
            name: "Viber's 24-hour session",
        };
        let day = TimeDelta::hours(24);
        let api = SendSource::Api;
        assert!(matches!(
            check(&BILLED, day - MS, &text(), api),
            Verdict::Open { .. }
        ));
        assert_eq!(
            check(&BILLED, day, &text(), api),
            Verdict::Closed {
                closed_at: Some(t0() + day)
            }
        );
        let allowed = BILLED.allowing_billed(true);
        assert_eq!(
            check(&allowed, day, &text(), api),
            Verdict::Billed {
                closed_at: Some(t0() + day)
            }
        );
        assert!(check(&allowed, day, &text(), api).allowed());
        assert_eq!(
            allowed.check(None, t0(), &text(), api),
            Verdict::Billed { closed_at: None }
        );
        assert!(
            !TEMPLATES.allowing_billed(true).billed_allowed,
            "only platforms that bill can allow it"
        );
        let e = BILLED.refusal(Some(t0()));
        assert_eq!(
            e.message,
            "outside Viber's 24-hour session, which closed at 2026-11-20T10:00:00Z; messages \
             the bot starts outside it are billed, and this bot does not allow them \
             (platform_settings.viber.send_outside_window)"
        );
    }

    #[test]
    fn without_a_window_nothing_is_refused() {
        let none = WindowPolicy::none(Platform::Telegram, "Telegram");
        let year = TimeDelta::days(365);
        assert_eq!(
            check(&none, year, &text(), SendSource::Api),
            Verdict::Unlimited
        );
        assert_eq!(
            none.check(None, t0(), &text(), SendSource::Api),
            Verdict::Unlimited
        );
    }

    #[test]
    fn a_user_who_never_wrote_has_no_window() {
        assert_eq!(
            TEMPLATES.check(None, t0(), &text(), SendSource::Api),
            Verdict::Closed { closed_at: None }
        );
        assert_eq!(
            TEMPLATES.check(None, t0(), &template(), SendSource::Api),
            Verdict::Template
        );
    }

    /// Messenger's shape: no template bridges the window, a human agent's messages do.
    #[test]
    fn without_templates_only_a_human_agent_is_named_and_a_template_is_refused() {
        let agents_only = WindowPolicy {
            templates_outside: false,
            ..RICH
        };
        let e = agents_only.refusal(Some(t0()));
        assert!(
            e.message.ends_with(
                "only a human agent's messages (source human) within 7 days of the user's \
                 last message can be sent until the user writes again"
            ),
            "{}",
            e.message
        );
        assert!(!e.message.contains("template"), "{}", e.message);
        assert!(matches!(
            agents_only.check(
                Some(t0() - TimeDelta::days(2)),
                t0(),
                &template(),
                SendSource::Api
            ),
            Verdict::Closed { .. }
        ));
    }

    #[test]
    fn the_refusal_names_the_window_and_its_close_time() {
        let e = TEMPLATES.refusal(Some(t0()));
        assert_eq!(e.code, "outside_window");
        assert_eq!(
            e.message,
            "outside a 24-hour customer-service window, which closed at \
             2026-11-20T10:00:00Z; only templates can be sent until the user writes again"
        );
        let never = RICH.refusal(None);
        assert!(never.message.contains("never opened"), "{}", never.message);
        assert!(
            never
                .message
                .contains("human agent's messages (source human) within 7 days"),
            "{}",
            never.message
        );
    }
}
