//! Messaging windows: how long after a user's last message each platform lets a bot send
//! free-form messages, and what it still allows afterwards. One table ([`POLICIES`]), read by
//! the router (which refuses a send, or substitutes the bot's fallback template, before any
//! platform call) and by the API (which refuses it synchronously when it can tell).
//!
//! | platform | free-form window | outside it |
//! |---|---|---|
//! | WhatsApp | 24 h customer-service window | templates only |
//! | Messenger | 24 h standard window | templates (utility messages), and a human agent's messages (`source: human`, sent with the `HUMAN_AGENT` tag) up to 7 days after the user's last message |
//! | WeChat | 48 h customer-service window | template messages only |
//! | LINE | none (a reply token lasts about a minute; the sender falls back to push) | — |
//! | Telegram, Viber, Kik, custom | none | — |
//!
//! Windows count from the platform's timestamp of the user's last message (what the platforms
//! count from); a window is open while `now < last + window` and closed from that instant on.

use chrono::{DateTime, TimeDelta, Utc};

use crate::content::Content;
use crate::wire::{DeliveryError, Platform, SendSource};

/// The code of a send refused because the platform's window is closed.
pub const OUTSIDE_WINDOW: &str = "outside_window";

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
    /// How people call the window, for error messages.
    pub name: &'static str,
}

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

/// Every platform's policy, in [`Platform`] order.
pub const POLICIES: [WindowPolicy; 8] = [
    WindowPolicy {
        platform: Platform::Telegram,
        window_secs: None,
        templates_outside: false,
        human_agent_secs: None,
        reply_token_secs: None,
        name: "Telegram",
    },
    WindowPolicy {
        platform: Platform::Messenger,
        window_secs: Some(DAY),
        templates_outside: true,
        human_agent_secs: Some(7 * DAY),
        reply_token_secs: None,
        name: "Messenger's 24-hour standard messaging window",
    },
    WindowPolicy {
        platform: Platform::Whatsapp,
        window_secs: Some(DAY),
        templates_outside: true,
        human_agent_secs: None,
        reply_token_secs: None,
        name: "WhatsApp's 24-hour customer-service window",
    },
    WindowPolicy {
        platform: Platform::Wechat,
        window_secs: Some(2 * DAY),
        templates_outside: true,
        human_agent_secs: None,
        reply_token_secs: None,
        name: "WeChat's 48-hour customer-service window",
    },
    WindowPolicy {
        platform: Platform::Kik,
        window_secs: None,
        templates_outside: false,
        human_agent_secs: None,
        reply_token_secs: None,
        name: "Kik",
    },
    WindowPolicy {
        platform: Platform::Line,
        window_secs: None,
        templates_outside: false,
        human_agent_secs: None,
        reply_token_secs: Some(60),
        name: "LINE",
    },
    WindowPolicy {
        platform: Platform::Viber,
        window_secs: None,
        templates_outside: false,
        human_agent_secs: None,
        reply_token_secs: None,
        name: "Viber",
    },
    WindowPolicy {
        platform: Platform::Custom,
        window_secs: None,
        templates_outside: false,
        human_agent_secs: None,
        reply_token_secs: None,
        name: "custom channels",
    },
];

/// The policy of `platform`.
pub fn policy(platform: Platform) -> &'static WindowPolicy {
    POLICIES
        .iter()
        .find(|p| p.platform == platform)
        .unwrap_or(&POLICIES[0])
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
        let Some(window) = self.window_secs else {
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
            (true, Some(_)) => {
                "; only templates, or a human agent's messages (source human) within 7 days of the user's last message, can be sent until the user writes again"
            }
            (true, None) => "; only templates can be sent until the user writes again",
            _ => "; nothing can be sent until the user writes again",
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

    fn text() -> Content {
        Content::Text { text: "hi".into() }
    }

    fn template() -> Content {
        Content::Template(Template::with_body("order_ready", "en_US", &[]))
    }

    fn t0() -> DateTime<Utc> {
        "2026-11-20T10:00:00Z".parse().unwrap()
    }

    /// `check(platform, seconds since the user's last message, content, source)`.
    fn check(
        platform: Platform,
        after: TimeDelta,
        content: &Content,
        source: SendSource,
    ) -> Verdict {
        policy(platform).check(Some(t0()), t0() + after, content, source)
    }

    const MS: TimeDelta = TimeDelta::milliseconds(1);

    #[test]
    fn the_table_covers_every_platform_once_in_order() {
        let all = [
            Platform::Telegram,
            Platform::Messenger,
            Platform::Whatsapp,
            Platform::Wechat,
            Platform::Kik,
            Platform::Line,
            Platform::Viber,
            Platform::Custom,
        ];
        for (p, policy) in all.iter().zip(POLICIES.iter()) {
            assert_eq!(*p, policy.platform);
            assert_eq!(super::policy(*p).platform, *p);
        }
        assert_eq!(policy(Platform::Line).reply_token_secs, Some(60));
    }

    #[test]
    fn whatsapp_closes_after_24_hours_except_for_templates() {
        let api = SendSource::Api;
        let day = TimeDelta::hours(24);
        assert_eq!(
            check(Platform::Whatsapp, day - MS, &text(), api),
            Verdict::Open {
                closes_at: t0() + day
            }
        );
        assert_eq!(
            check(Platform::Whatsapp, day, &text(), api),
            Verdict::Closed {
                closed_at: Some(t0() + day)
            }
        );
        assert_eq!(
            check(Platform::Whatsapp, day, &template(), api),
            Verdict::Template
        );
        // A human agent gets nothing more on WhatsApp.
        assert!(!check(Platform::Whatsapp, day, &text(), SendSource::Human).allowed());
        // Templates are fine inside the window too.
        assert!(check(Platform::Whatsapp, day - MS, &template(), api).allowed());
    }

    #[test]
    fn messenger_policy_gives_human_agents_seven_days() {
        let day = TimeDelta::hours(24);
        let week = TimeDelta::days(7);
        assert!(check(Platform::Messenger, day - MS, &text(), SendSource::Api).allowed());
        assert_eq!(
            check(Platform::Messenger, day, &text(), SendSource::Api),
            Verdict::Closed {
                closed_at: Some(t0() + day)
            }
        );
        assert_eq!(
            check(Platform::Messenger, day, &text(), SendSource::Human),
            Verdict::HumanAgent { until: t0() + week }
        );
        assert_eq!(
            check(Platform::Messenger, week - MS, &text(), SendSource::Human),
            Verdict::HumanAgent { until: t0() + week }
        );
        assert_eq!(
            check(Platform::Messenger, week, &text(), SendSource::Human),
            Verdict::Closed {
                closed_at: Some(t0() + week)
            }
        );
        // Inside the standard window a human's message needs no tag.
        assert!(matches!(
            check(Platform::Messenger, day - MS, &text(), SendSource::Human),
            Verdict::Open { .. }
        ));
    }

    #[test]
    fn wechat_has_48_hours() {
        let two = TimeDelta::hours(48);
        assert!(check(Platform::Wechat, two - MS, &text(), SendSource::Api).allowed());
        assert!(!check(Platform::Wechat, two, &text(), SendSource::Api).allowed());
    }

    #[test]
    fn platforms_without_a_window_never_refuse() {
        let year = TimeDelta::days(365);
        for p in [
            Platform::Telegram,
            Platform::Line,
            Platform::Viber,
            Platform::Kik,
            Platform::Custom,
        ] {
            assert_eq!(
                check(p, year, &text(), SendSource::Api),
                Verdict::Unlimited,
                "{p}"
            );
            assert_eq!(
                policy(p).check(None, t0(), &text(), SendSource::Api),
                Verdict::Unlimited
            );
        }
    }

    #[test]
    fn a_user_who_never_wrote_has_no_window() {
        assert_eq!(
            policy(Platform::Whatsapp).check(None, t0(), &text(), SendSource::Api),
            Verdict::Closed { closed_at: None }
        );
        assert_eq!(
            policy(Platform::Whatsapp).check(None, t0(), &template(), SendSource::Api),
            Verdict::Template
        );
    }

    #[test]
    fn the_refusal_names_the_window_and_its_close_time() {
        let e = policy(Platform::Whatsapp).refusal(Some(t0()));
        assert_eq!(e.code, "outside_window");
        assert_eq!(
            e.message,
            "outside WhatsApp's 24-hour customer-service window, which closed at \
             2026-11-20T10:00:00Z; only templates can be sent until the user writes again"
        );
        let never = policy(Platform::Messenger).refusal(None);
        assert!(never.message.contains("never opened"), "{}", never.message);
        assert!(never.message.contains("human agent"), "{}", never.message);
    }
}
