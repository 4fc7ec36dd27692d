//! Every messenger Patchbay speaks, one line each. The services that are not a platform's own
//! (auth, normaliser, bot-router, api) look a platform up here: its credentials, window,
//! normalisation, webhook path and how a new contact is reached all come from its crate's
//! [`PlatformSpec`]. Adding a messenger adds its crate's `SPEC` to [`PLATFORMS`].

use patchbay_contract::templates::{RenderError, StoredTemplate, Values};
use patchbay_contract::windows::WindowPolicy;
use patchbay_contract::{Platform, PlatformSettings};
pub use patchbay_platform::spec::{Completed, CredentialsError, FirstContact, PlatformSpec};

/// The platforms this release supports.
pub static PLATFORMS: &[&PlatformSpec] = &[
    &patchbay_telegram::SPEC,
    &patchbay_messenger::SPEC,
    &patchbay_whatsapp::SPEC,
    &patchbay_wechat::SPEC,
    &patchbay_kik::SPEC,
    &patchbay_viber::SPEC,
    &patchbay_line::SPEC,
    &patchbay_custom::SPEC,
];

/// Checks a bot's settings on `platform` with the platform's crate; the error names the field
/// under `platform_settings.<platform>`.
pub fn check_settings(
    platform: Platform,
    settings: &PlatformSettings,
) -> Result<(), patchbay_contract::content::FieldError> {
    let at = format!("platform_settings.{platform}");
    let spec = spec(platform)
        .map_err(|e| patchbay_contract::content::FieldError::new(at.clone(), e.to_string()))?;
    (spec.settings)(settings).map_err(|e| e.within(&at))
}

/// The messaging window of `platform` for `bot`: the platform's, with billed sends outside it
/// allowed when the bot's settings there allow them.
pub fn window_for(platform: Platform, bot: Option<&patchbay_contract::BotRecord>) -> WindowPolicy {
    let allowed = bot
        .and_then(|b| b.platform_settings.get(&platform))
        .is_some_and(|s| s.send_outside_window);
    window(platform).allowing_billed(allowed)
}

/// Recipients per call of `platform`'s bulk call ([`PlatformSpec::bulk`]), when it has one.
pub fn bulk_recipients(platform: Platform) -> Option<usize> {
    spec(platform).ok()?.bulk.map(|b| b.max_recipients)
}

/// Recipients of a broadcast's message on a platform without a bulk call that one outbound
/// job names ([`patchbay_contract::OutboundJob::also`]): its sender sends them one by one at
/// the channel's pace in one handling, so the job, its delivery and its status cross NATS
/// once for all of them.
pub const PACED_RECIPIENTS: usize = 50;

/// Recipients one outbound job of a broadcast's message names at most on `platform`: its bulk
/// call's, else [`PACED_RECIPIENTS`].
pub fn job_recipients(platform: Platform) -> usize {
    bulk_recipients(platform).map_or(PACED_RECIPIENTS, |n| n.max(1))
}

/// Registry template `template` as content for a user on `platform` (see
/// [`StoredTemplate::render`]): its `text` form when `text_first` and it has one, else the
/// platform's own form (its crate's [`PlatformSpec::template`]), else the `text` form.
pub fn render_template(
    platform: Platform,
    template: &StoredTemplate,
    text_first: bool,
    values: &Values<'_>,
) -> Result<patchbay_contract::Content, RenderError> {
    template.render(
        platform,
        template_form(platform, &template.def),
        text_first,
        values,
    )
}

/// `platform`'s own form of a registry template ([`PlatformSpec::template`]), if it has one.
pub fn template_form(
    platform: Platform,
    def: &patchbay_contract::templates::TemplateDef,
) -> Option<patchbay_contract::content::Template> {
    spec(platform).ok().and_then(|s| (s.template)(def))
}

/// A platform this release does not support (yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} channels are not supported by this release yet")]
pub struct Unsupported(pub Platform);

/// The spec of `platform`.
pub fn spec(platform: Platform) -> Result<&'static PlatformSpec, Unsupported> {
    PLATFORMS
        .iter()
        .copied()
        .find(|s| s.platform == platform)
        .ok_or(Unsupported(platform))
}

/// The messaging window of `platform` (none for a platform this release does not support: no
/// channel of it can exist).
pub fn window(platform: Platform) -> WindowPolicy {
    spec(platform).map_or_else(
        |_| WindowPolicy::none(platform, platform.as_str()),
        |s| s.window,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_platform_is_listed_once_with_its_own_window() {
        for (i, s) in PLATFORMS.iter().enumerate() {
            assert_eq!(s.window.platform, s.platform, "{}", s.platform);
            assert!(
                PLATFORMS[i + 1..].iter().all(|o| o.platform != s.platform),
                "{} listed twice",
                s.platform
            );
            assert_eq!(spec(s.platform).unwrap().platform, s.platform);
        }
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
        for p in all.into_iter().filter(|p| spec(*p).is_err()) {
            assert_eq!(
                spec(p).unwrap_err().to_string(),
                format!("{p} channels are not supported by this release yet")
            );
            assert_eq!(window(p).window_secs, None);
        }
    }

    #[test]
    fn webhook_paths() {
        assert_eq!(
            (spec(Platform::Telegram).unwrap().webhook_path)("ch_1"),
            "/webhooks/telegram/ch_1"
        );
        assert_eq!(
            (spec(Platform::Custom).unwrap().webhook_path)("ch_1"),
            "/v1/custom/ch_1"
        );
    }
}
