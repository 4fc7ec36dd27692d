//! The OpenAPI 3.1 document of the API, served at `/openapi.json`. Request and response
//! schemas are generated from the very types the handlers (de)serialise (`schemars`, JSON
//! Schema 2020-12, which OpenAPI 3.1 uses as is); the operations are listed in [`OPERATIONS`],
//! and a test fails when a route mounted in this crate is missing from it (or the other way
//! round).

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use patchbay_contract::HistoryPage;
use patchbay_contract::brandchat::{BrandchatMessage, BrandchatProfile};
use patchbay_custom::api::{RegisterUser, RegisteredUser, SendAsUser, SentAsUser};

use crate::codes::ClaimBody;
use crate::conversations::{UpsertBody, Upserted};
use crate::partners::{EnableBody, PartnerBody};
use crate::settings::{BotPatch, ChannelPatch, CreateTenantBody, Items, RotateBody};
use crate::users::Profile;
use crate::{Accepted, CreateBotBody, CreateChannelBody, ReplayBody, SendBody};
use patchbay_contract::partners::{App, AppDef, CreatedApp, CreatedPartner, Installation, Partner};

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    /// The operator token.
    Operator,
    /// A bot's API key.
    Bot,
    /// A partner's key.
    Partner,
    /// BrandChat's `?bot=` and `X-Chat-Signature`.
    Brandchat,
    /// A custom channel's domain key.
    DomainKey,
    /// A custom channel's user token.
    UserToken,
    /// BotDistrikt compatibility: the channel's domain in the body (and, for messages, the
    /// user's `webchat_id` as `Authorization`).
    BotdistriktDomain,
    /// chat-api compatibility: a credential of the bot as `?token=`.
    ChatApiToken,
    /// Web1on1 compatibility: a Bearer JWT of `/web1on1/v2/auth/token`, or any credential of
    /// the bot.
    Web1on1Token,
    /// UChat's partner API: a partner's key (where the workspace enabled its app) or the
    /// operator token.
    UchatPartner,
    /// UChat's `bot_url`: an API key of the channel's bot (UChat's flow API key).
    UchatFlowKey,
    /// Anyone.
    Public,
}

/// What the chat-api instance routes do (the same for `GET` and `POST`).
const CHAT_API_INSTANCE: &str = "chat-api (WhatsApp) compatibility for one of the bot's WhatsApp channels \
         (instance<channel id>): POST message, sendMessage (phone or chatId, body; a file by URL \
         with filename), sendFile, sendTemplate (template, namespace, language.code, params as \
         WhatsApp's components), webhook (webhookUrl: events in chat-api's shapes), me (the \
         business profile); GET webhook, status, me, messages?chatId=. Errors as chat-api's \
         {\"error\"}; a refused send {\"sent\": false, \"message\"} (docs/compat.md).";

/// What chat-api's short routes do.
const CHAT_API_SHORT: &str =
    "chat-api's short URL: the same methods for the bot's only WhatsApp channel.";

type SchemaFn = fn(&mut SchemaGenerator) -> schemars::Schema;

fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<T>()
}

/// One operation of the API.
pub(crate) struct Operation {
    pub(crate) method: &'static str,
    pub(crate) path: &'static str,
    caller: Caller,
    summary: &'static str,
    request: Option<SchemaFn>,
    /// The success status and its body, if any.
    response: (u16, Option<SchemaFn>),
    /// Query parameters: name, description.
    query: &'static [(&'static str, &'static str)],
    /// Optional request headers: name, description.
    headers: &'static [(&'static str, &'static str)],
}

const fn op(
    method: &'static str,
    path: &'static str,
    caller: Caller,
    summary: &'static str,
    request: Option<SchemaFn>,
    response: (u16, Option<SchemaFn>),
) -> Operation {
    Operation {
        method,
        path,
        caller,
        summary,
        request,
        response,
        query: &[],
        headers: &[],
    }
}

/// Every operation the `api` service serves.
pub(crate) const OPERATIONS: &[Operation] = &[
    op(
        "post",
        "/admin/v1/bots",
        Caller::Operator,
        "Create a bot; its API key and webhook secret are shown once.",
        Some(schema::<CreateBotBody>),
        (201, Some(schema::<patchbay_contract::CreatedBot>)),
    ),
    op(
        "post",
        "/admin/v1/tenants",
        Caller::Operator,
        "Create a tenant.",
        Some(schema::<CreateTenantBody>),
        (201, Some(schema::<patchbay_contract::Tenant>)),
    ),
    op(
        "get",
        "/admin/v1/tenants",
        Caller::Operator,
        "Every tenant, with its number of bots.",
        None,
        (200, Some(schema::<Items<patchbay_contract::Tenant>>)),
    ),
    Operation {
        query: &[("tenant_id", "only this tenant's bots")],
        ..op(
            "get",
            "/admin/v1/bots",
            Caller::Operator,
            "Every bot (no secrets), or one tenant's.",
            None,
            (200, Some(schema::<Items<patchbay_contract::BotSummary>>)),
        )
    },
    op(
        "patch",
        "/admin/v1/bots/{bot_id}",
        Caller::Operator,
        "Enable or disable a bot, set its API request limit, its fallback templates or its \
         settings per platform (null removes one).",
        Some(schema::<BotPatch>),
        (204, None),
    ),
    op(
        "patch",
        "/admin/v1/bots/{bot_id}/channels/{channel_id}",
        Caller::Operator,
        "Enable or disable one of a bot's channels (a Viber channel's webhook is removed at \
         Viber while disabled).",
        Some(schema::<ChannelPatch>),
        (204, None),
    ),
    op(
        "post",
        "/admin/v1/bots/{bot_id}/channels",
        Caller::Operator,
        "Connect a bot to a messenger account.",
        Some(schema::<CreateChannelBody>),
        (201, Some(schema::<patchbay_contract::CreatedChannel>)),
    ),
    op(
        "get",
        "/admin/v1/bots/{bot_id}/channels",
        Caller::Operator,
        "The bot's channels (no credentials), each with its setup at the platform.",
        None,
        (200, Some(schema::<Items<patchbay_contract::ChannelView>>)),
    ),
    op(
        "post",
        "/v1/templates",
        Caller::Bot,
        "Store a named template with the form each platform needs: `text` (platforms without \
         templates), `whatsapp` (name, language, components) and `wechat` (template_id, data, \
         url); their texts may use {{contact.name}}, {{contact.fields.<name>}} and a send's \
         own meta keys ({{PlanTime}}). 201 with its id and variables; 422 invalid_template \
         naming the field; 409 name_taken.",
        Some(schema::<patchbay_contract::templates::TemplateDef>),
        (
            201,
            Some(schema::<patchbay_contract::templates::StoredTemplate>),
        ),
    ),
    op(
        "get",
        "/v1/templates",
        Caller::Bot,
        "The bot's templates, by name.",
        None,
        (
            200,
            Some(schema::<Items<patchbay_contract::templates::StoredTemplate>>),
        ),
    ),
    op(
        "get",
        "/v1/templates/{template_id}",
        Caller::Bot,
        "One template; 404 for another bot's.",
        None,
        (
            200,
            Some(schema::<patchbay_contract::templates::StoredTemplate>),
        ),
    ),
    op(
        "put",
        "/v1/templates/{template_id}",
        Caller::Bot,
        "Replace a template's definition (name included; 409 name_taken).",
        Some(schema::<patchbay_contract::templates::TemplateDef>),
        (
            200,
            Some(schema::<patchbay_contract::templates::StoredTemplate>),
        ),
    ),
    op(
        "delete",
        "/v1/templates/{template_id}",
        Caller::Bot,
        "Delete a template (204); 404 for another bot's.",
        None,
        (204, None),
    ),
    Operation {
        headers: &[(
            "Idempotency-Key",
            "1 to 200 characters: asking again with the same key answers the same broadcast",
        )],
        ..op(
            "post",
            "/v1/broadcasts",
            Caller::Bot,
            "Send one message (messages, or a registry template rendered per recipient) to an \
             audience: every subscribed user of the bot (all), narrowed by channels, platforms \
             and contact fields, or a list of users; optionally at start_at. 202 once stored. \
             Each recipient gets it once; unsubscribed and opted-out users and users outside \
             the platform's window (unless the template has the platform's form) are skipped \
             with the reason counted; sent at each channel's pace behind its conversations.",
            Some(schema::<patchbay_contract::broadcasts::BroadcastSpec>),
            (
                202,
                Some(schema::<patchbay_contract::broadcasts::Broadcast>),
            ),
        )
    },
    Operation {
        query: &[
            ("limit", "1 to 100 (default 20)"),
            ("after", "the previous page's next"),
        ],
        ..op(
            "get",
            "/v1/broadcasts",
            Caller::Bot,
            "The bot's broadcasts, newest first.",
            None,
            (
                200,
                Some(schema::<patchbay_contract::broadcasts::BroadcastPage>),
            ),
        )
    },
    op(
        "get",
        "/v1/broadcasts/{broadcast_id}",
        Caller::Bot,
        "A broadcast's state (scheduled, queueing, sending, paused, cancelled, completed) and \
         counts (recipients, queued, sending, sent, delivered, read, failed, skipped, with the \
         reasons of failures and skips); 404 for another bot's.",
        None,
        (
            200,
            Some(schema::<patchbay_contract::broadcasts::Broadcast>),
        ),
    ),
    op(
        "post",
        "/v1/broadcasts/{broadcast_id}/cancel",
        Caller::Bot,
        "Cancel: recipients not sent to yet are skipped (cancelled), including those waiting \
         at the sender. 409 broadcast_finished once completed.",
        None,
        (
            200,
            Some(schema::<patchbay_contract::broadcasts::Broadcast>),
        ),
    ),
    op(
        "post",
        "/v1/broadcasts/{broadcast_id}/pause",
        Caller::Bot,
        "Pause: nothing more is handed to the senders (what they hold, at most \
         PATCHBAY_BROADCAST_WINDOW, goes out). 409 broadcast_finished once completed or \
         cancelled.",
        None,
        (
            200,
            Some(schema::<patchbay_contract::broadcasts::Broadcast>),
        ),
    ),
    op(
        "post",
        "/v1/broadcasts/{broadcast_id}/resume",
        Caller::Bot,
        "Resume a paused broadcast. 409 broadcast_finished once completed or cancelled.",
        None,
        (
            200,
            Some(schema::<patchbay_contract::broadcasts::Broadcast>),
        ),
    ),
    op(
        "get",
        "/v1/channels",
        Caller::Bot,
        "The bot's own channels (no credentials), oldest first, each with its setup at the \
         platform.",
        None,
        (200, Some(schema::<Items<patchbay_contract::ChannelView>>)),
    ),
    op(
        "get",
        "/v1/channels/{channel_id}",
        Caller::Bot,
        "One of the bot's channels (no credentials); 404 for another bot's.",
        None,
        (200, Some(schema::<patchbay_contract::ChannelView>)),
    ),
    op(
        "post",
        "/admin/v1/partners",
        Caller::Operator,
        "Add a partner: 201 with its key (ppk_…, shown once), the Bearer of /v1/partner routes.",
        Some(schema::<PartnerBody>),
        (201, Some(schema::<CreatedPartner>)),
    ),
    op(
        "get",
        "/admin/v1/partners",
        Caller::Operator,
        "Every partner.",
        None,
        (200, Some(schema::<Items<Partner>>)),
    ),
    op(
        "post",
        "/v1/partner/apps",
        Caller::Partner,
        "Publish an app (callback URL, events, requested scopes): 201 with its webhook secret \
         (shown once); 422 naming a bad field.",
        Some(schema::<AppDef>),
        (201, Some(schema::<CreatedApp>)),
    ),
    op(
        "get",
        "/v1/partner/apps",
        Caller::Partner,
        "The partner's apps.",
        None,
        (200, Some(schema::<Items<App>>)),
    ),
    op(
        "get",
        "/v1/partner/apps/{app_id}",
        Caller::Partner,
        "One of the partner's apps; 404 for another partner's.",
        None,
        (200, Some(schema::<App>)),
    ),
    op(
        "put",
        "/v1/partner/apps/{app_id}",
        Caller::Partner,
        "Replace an app's definition; every installation follows.",
        Some(schema::<AppDef>),
        (200, Some(schema::<App>)),
    ),
    op(
        "delete",
        "/v1/partner/apps/{app_id}",
        Caller::Partner,
        "Withdraw an app (204): every installation ends, its tokens with it.",
        None,
        (204, None),
    ),
    op(
        "get",
        "/v1/partner/installations",
        Caller::Partner,
        "Where the partner's apps are enabled: organisation, bot, channels.",
        None,
        (200, Some(schema::<Items<Installation>>)),
    ),
    op(
        "post",
        "/v1/partner/installations/{installation_id}/token",
        Caller::Partner,
        "An access token for the installation's bot (a Bearer of /v1 routes with the app's \
         scopes, sending only through the installation's channels); 404 for another \
         partner's installation.",
        None,
        (200, Some(schema::<patchbay_contract::IssuedAccessToken>)),
    ),
    op(
        "get",
        "/v1/apps",
        Caller::Bot,
        "The partner apps enabled on the bot.",
        None,
        (200, Some(schema::<Items<Installation>>)),
    ),
    op(
        "get",
        "/v1/apps/{app_id}",
        Caller::Bot,
        "An app as an organisation sees it before enabling it: its partner, callback, events \
         and the scopes it asks for.",
        None,
        (200, Some(schema::<App>)),
    ),
    op(
        "post",
        "/v1/apps/{app_id}/enable",
        Caller::Bot,
        "Enable an app on the bot, on all its channels or some (again: change them); its \
         events go to the app and the partner may send through those channels.",
        Some(schema::<EnableBody>),
        (200, Some(schema::<Installation>)),
    ),
    op(
        "delete",
        "/v1/apps/{app_id}",
        Caller::Bot,
        "Disable an app on the bot (204): its events stop and its tokens stop working; 404 when \
         it is not enabled.",
        None,
        (204, None),
    ),
    op(
        "get",
        "/v1/channels/{channel_id}/profile",
        Caller::Bot,
        "The channel's profile as its platform has it now (Telegram: name, description, \
         short_description; WhatsApp: the business profile; Messenger: greeting, get_started, \
         persistent_menu, ice_breakers); 422 unsupported for other platforms, 502 with the \
         platform's error.",
        None,
        (200, Some(schema::<patchbay_contract::ChannelProfile>)),
    ),
    op(
        "patch",
        "/v1/channels/{channel_id}/profile",
        Caller::Bot,
        "Change keys of the channel's profile at its platform (null removes one; WhatsApp's \
         photo_url sets the picture); answers the profile read back. 422 names a bad key, or \
         carries what the platform refused.",
        Some(schema::<serde_json::Map<String, serde_json::Value>>),
        (200, Some(schema::<patchbay_contract::ChannelProfile>)),
    ),
    op(
        "get",
        "/admin/v1/bots/{bot_id}/channels/{channel_id}",
        Caller::Operator,
        "One channel (no credentials) with its setup at the platform: for Kik, whether the \
         bot's webhook and features are set, and the configuration Kik read back.",
        None,
        (200, Some(schema::<patchbay_contract::ChannelView>)),
    ),
    op(
        "post",
        "/admin/v1/bots/{bot_id}/webhook/enable",
        Caller::Operator,
        "Re-enable a callback endpoint disabled after it answered 410 Gone.",
        None,
        (204, None),
    ),
    op(
        "post",
        "/admin/v1/bots/{bot_id}/keys/rotate",
        Caller::Operator,
        "Issue a new API key; the current ones work until the overlap ends.",
        Some(schema::<RotateBody>),
        (201, Some(schema::<patchbay_contract::RotatedKey>)),
    ),
    op(
        "post",
        "/admin/v1/bots/{bot_id}/keys/{key_id}/revoke",
        Caller::Operator,
        "Revoke an API key at once.",
        None,
        (204, None),
    ),
    op(
        "post",
        "/v1/messages",
        Caller::Bot,
        "Send messages to a user (by user id, or platform and address); 202 once stored. 404 \
         user_not_found for an unknown recipient; 422 outside_window for a free-form message \
         outside the platform's messaging window when the bot has no fallback template.",
        Some(schema::<SendBody>),
        (202, Some(schema::<Accepted>)),
    ),
    Operation {
        query: &[
            ("status", "pending, delivered or failed"),
            ("event_type", "e.g. message.received"),
            ("since", "RFC 3339 time, inclusive"),
            ("until", "RFC 3339 time, exclusive"),
            ("cursor", "next_cursor of the previous page"),
            ("limit", "1 to 100 (default 50)"),
        ],
        ..op(
            "get",
            "/v1/deliveries",
            Caller::Bot,
            "The bot's deliveries, newest first, paginated.",
            None,
            (200, Some(schema::<patchbay_contract::DeliveryPage>)),
        )
    },
    op(
        "get",
        "/v1/deliveries/{event_id}",
        Caller::Bot,
        "One delivery with its event and every attempt.",
        None,
        (200, Some(schema::<patchbay_contract::DeliveryDetail>)),
    ),
    op(
        "post",
        "/v1/deliveries/{event_id}/retry",
        Caller::Bot,
        "Deliver an event once more, with its original webhook-id.",
        None,
        (202, Some(schema::<patchbay_contract::Delivery>)),
    ),
    op(
        "post",
        "/v1/deliveries/replay",
        Caller::Bot,
        "Deliver the dead-lettered events since a time again, the oldest first: at most `limit` \
         and PATCHBAY_REPLAY_PER_MINUTE per call and per bot a minute (429 `replay_paced` with \
         Retry-After beyond); `more` says whether the window holds others.",
        Some(schema::<ReplayBody>),
        (202, Some(schema::<patchbay_contract::Replayed>)),
    ),
    op(
        "get",
        "/v1/webhook",
        Caller::Bot,
        "The bot's callback settings.",
        None,
        (200, Some(schema::<patchbay_contract::WebhookSettings>)),
    ),
    op(
        "put",
        "/v1/webhook",
        Caller::Bot,
        "Change the callback settings; a new URL must echo hub.challenge first.",
        Some(schema::<patchbay_contract::WebhookInput>),
        (200, Some(schema::<patchbay_contract::WebhookSettings>)),
    ),
    op(
        "post",
        "/v1/webhook/secret/rotate",
        Caller::Bot,
        "Issue a new signing secret; both sign callbacks until the overlap ends.",
        Some(schema::<RotateBody>),
        (201, Some(schema::<patchbay_contract::RotatedSecret>)),
    ),
    op(
        "post",
        "/v1/keys/rotate",
        Caller::Bot,
        "Issue a new API key; the current ones work until the overlap ends.",
        Some(schema::<RotateBody>),
        (201, Some(schema::<patchbay_contract::RotatedKey>)),
    ),
    op(
        "delete",
        "/v1/keys/{key_id}",
        Caller::Bot,
        "Revoke one of the bot's API keys at once.",
        None,
        (204, None),
    ),
    op(
        "post",
        "/v1/conversations",
        Caller::Bot,
        "Find a contact by phone (E.164) or e-mail, or create them on a channel that can reach them, and send them messages: 201 when the contact is new, 200 when the bot knew them.",
        Some(schema::<UpsertBody>),
        (201, Some(schema::<Upserted>)),
    ),
    Operation {
        query: &[
            (
                "before",
                "a message id: only older messages (the previous page's next_cursor)",
            ),
            ("limit", "page size, 1 to 200 (default 50)"),
        ],
        ..op(
            "get",
            "/v1/conversations/{conversation_id}/messages",
            Caller::Bot,
            "A conversation's messages, newest first (404 for another bot's conversation).",
            None,
            (200, Some(schema::<HistoryPage>)),
        )
    },
    Operation {
        query: &[
            (
                "handled_by",
                "human or bot: only the conversations they answer",
            ),
            ("limit", "at most this many, 1 to 200 (default 50)"),
        ],
        ..op(
            "get",
            "/v1/conversations",
            Caller::Bot,
            "The bot's conversations as an agent's inbox: those a human holds whose user is \
             waiting for an answer first (waiting: true), then by the user's last message, \
             newest first.",
            None,
            (
                200,
                Some(schema::<crate::settings::Items<patchbay_contract::InboxEntry>>),
            ),
        )
    },
    op(
        "get",
        "/v1/messages/{message_id}/journey",
        Caller::Bot,
        "Every stage a message passed, with its time: received from the platform, stored, each \
         attempt to deliver it to the bot, the bot's inline replies with their own journeys \
         (queued, the platform's answer, its receipts). 404 for another bot's message.",
        None,
        (200, Some(schema::<patchbay_contract::Journey>)),
    ),
    op(
        "post",
        "/v1/channels/{channel_id}/try",
        Caller::Bot,
        "A text from a made-up user as the channel's platform would post it to the channel's \
         webhook, signed with the channel's credentials, for the console's \"try it\" box to \
         post; Patchbay posts nothing itself. 422 try_unsupported for platforms without one \
         (Telegram has one).",
        Some(schema::<crate::channels::TryBody>),
        (200, Some(schema::<crate::channels::TryRequest>)),
    ),
    op(
        "get",
        "/v1/me",
        Caller::Bot,
        "The bot, the credential and the scopes it holds; for an agent's invite, the agent. \
         Any credential of the bot may ask.",
        None,
        (200, Some(schema::<crate::agents::Me>)),
    ),
    op(
        "get",
        "/v1/agents",
        Caller::Bot,
        "The bot's human agents whose invites work (no invites).",
        None,
        (200, Some(schema::<crate::agents::AgentList>)),
    ),
    op(
        "post",
        "/v1/agents",
        Caller::Bot,
        "Invite a human agent: 201 with its invite (`pbag_…`, shown this once), which signs \
         the agent in to the console. It may read conversations, users and templates, take \
         conversations over and send as the agent; key rotations leave it alone.",
        Some(schema::<crate::agents::InviteBody>),
        (201, Some(schema::<patchbay_contract::Agent>)),
    ),
    op(
        "delete",
        "/v1/agents/{agent_id}",
        Caller::Bot,
        "The agent's invite stops working at once (204).",
        None,
        (204, None),
    ),
    op(
        "post",
        "/v1/conversations/{conversation_id}/handover",
        Caller::Bot,
        "Pass a conversation to a human agent ({\"to\": \"human\", \"agent\": \"…\"}: the \
         bot's messages are held back) or back to the bot ({\"to\": \"bot\"}); a change is a \
         conversation.handover event. 404 for another bot's conversation.",
        Some(schema::<crate::conversations::HandoverBody>),
        (200, Some(schema::<patchbay_contract::ConversationState>)),
    ),
    op(
        "post",
        "/brandchat/api/user/profile",
        Caller::Brandchat,
        "BrandChat: a user's profile object by numeric userId ({\"userId\": 1337}).",
        Some(schema::<BrandchatUserBody>),
        (200, Some(schema::<BrandchatProfile>)),
    ),
    op(
        "post",
        "/brandchat/api/send/messages",
        Caller::Brandchat,
        "BrandChat: send 1 to 10 messages (an array, each with userId); all valid or none sent; 200 with an empty body.",
        Some(schema::<Vec<BrandchatMessage>>),
        (200, None),
    ),
    op(
        "post",
        "/brandchat/api/code/claim",
        Caller::Brandchat,
        "BrandChat: claim a one-time code once ({\"code\": \"…\"}); the user's profile object.",
        Some(schema::<ClaimBody>),
        (200, Some(schema::<BrandchatProfile>)),
    ),
    op(
        "post",
        "/brandchat/api/file/upload",
        Caller::Brandchat,
        "BrandChat: upload one file (multipart/form-data, field media; X-Chat-Signature over the file's bytes): image/jpeg or image/png up to 128 kB, audio/amr 256 kB, video/mp4 1 MB; answers {\"fileId\": <int64>}.",
        None,
        (200, Some(schema::<FileUploaded>)),
    ),
    op(
        "get",
        "/brandchat/files/{bot_id}/{file_id}",
        Caller::Public,
        "A file uploaded through BrandChat's file/upload, for the platforms to fetch.",
        None,
        (200, None),
    ),
    Operation {
        headers: &[(
            "X-Patchbay-Registration",
            "The app's back end's proof, needed for an external_id that already has a user: t=<unix seconds>,v1=<hex HMAC-SHA256(registration_secret, \"<t>.<channel_id>.<external_id>\")>, within 300 seconds",
        )],
        ..op(
            "post",
            "/v1/custom/{channel_id}/users",
            Caller::DomainKey,
            "Register a user of a custom channel (served by ingress-custom): their id and a token that expires. The same external_id always gets the same user; an external_id that already has a user needs X-Patchbay-Registration: t=<unix seconds>,v1=<hex HMAC-SHA256(registration_secret, \"<t>.<channel_id>.<external_id>\")> from the app's back end (403 registration_proof_required without it; 401 invalid_registration_proof when it is wrong or stale), as does every registration on a channel with require_signed_registration.",
            Some(schema::<RegisterUser>),
            (201, Some(schema::<RegisteredUser>)),
        )
    },
    op(
        "post",
        "/v1/custom/{channel_id}/token",
        Caller::UserToken,
        "A new token for the user of an unexpired, unrevoked token (served by ingress-custom); also exchanges a token from before tokens expired, unless revoked since. 401 token_expired, token_revoked.",
        None,
        (200, Some(schema::<RegisteredUser>)),
    ),
    op(
        "post",
        "/v1/custom/{channel_id}/messages",
        Caller::UserToken,
        "Send as a custom channel's user (served by ingress-custom); answers with the bot's replies, waiting at most wait_ms. 401 token_expired or token_revoked for a token past its lifetime or revoked.",
        Some(schema::<SendAsUser>),
        (200, Some(schema::<SentAsUser>)),
    ),
    op(
        "get",
        "/chat-api/{instance}/{method}",
        Caller::ChatApiToken,
        CHAT_API_INSTANCE,
        None,
        (200, None),
    ),
    op(
        "post",
        "/chat-api/{instance}/{method}",
        Caller::ChatApiToken,
        CHAT_API_INSTANCE,
        None,
        (200, None),
    ),
    op(
        "get",
        "/chat-api/{method}",
        Caller::ChatApiToken,
        CHAT_API_SHORT,
        None,
        (200, None),
    ),
    op(
        "post",
        "/chat-api/{method}",
        Caller::ChatApiToken,
        CHAT_API_SHORT,
        None,
        (200, None),
    ),
    op(
        "post",
        "/web1on1/v2/auth/token",
        Caller::Public,
        "Web1on1 compatibility (the chipchat SDK): {clientId, refreshToken} renews a token pair \
         as the SDK does on 401 jwt expired; {apiKey} exchanges a bot's API key (or wraps a \
         partner's installation token). Answers {token (a JWT wrapping a Patchbay access \
         token), refreshToken, expiresIn}. 401 as POST /v1/auth/token.",
        Some(schema::<crate::web1on1::TokenBody>),
        (200, None),
    ),
    op(
        "post",
        "/web1on1/v2/conversations",
        Caller::Web1on1Token,
        "Web1on1's conversation upsert: organization (the caller's tenant id, bot id or bot \
         name), type contact, contact.profile (telephone and/or email, name), 1 to 10 messages \
         (field messages set contact fields, chat messages with meta.template send a registry \
         template by id or name, /accept, /join, /leave pass the conversation). 201 when the \
         contact is new, 200 when found; the conversation with the messages sent. Scope \
         messages:send; 403 organization_mismatch.",
        Some(schema::<crate::web1on1::UpsertBody>),
        (201, None),
    ),
    op(
        "get",
        "/web1on1/v2/conversations/{conversation_id}",
        Caller::Web1on1Token,
        "Web1on1 compatibility: a conversation and its contact (profile, fields as meta). \
         Scope messages:read.",
        None,
        (200, None),
    ),
    op(
        "post",
        "/web1on1/v2/conversations/{conversation_id}/messages",
        Caller::Web1on1Token,
        "Web1on1 compatibility: post one message (answered as one) or an array, as in the \
         upsert. Scope messages:send.",
        None,
        (201, None),
    ),
    op(
        "get",
        "/api/partner/workspace/{workspace_id}/apichat-webhook",
        Caller::UchatPartner,
        "UChat compatibility: the workspace's API chat webhook and its bot_url, as \
         {\"status\": \"ok\", \"data\": {webhook_url, webhook_verification_key, \
         webhook_status, bot_url}}. The workspace is a tenant (its bot where the partner's app \
         is enabled) or a bot. 404 when none was set or the workspace did not enable the app.",
        None,
        (200, None),
    ),
    op(
        "post",
        "/api/partner/workspace/{workspace_id}/apichat-webhook",
        Caller::UchatPartner,
        "UChat compatibility: sets the API chat webhook after UChat's challenge (a form POST of \
         hub_mode, hub_verify_token = webhook_verification_key, hub_challenge, answered with \
         the challenge), creating the workspace's API chat channel when it has none; answers as \
         GET. 422 webhook_verification_failed.",
        Some(schema::<crate::uchat::SetBody>),
        (200, None),
    ),
    op(
        "delete",
        "/api/partner/workspace/{workspace_id}/apichat-webhook",
        Caller::UchatPartner,
        "UChat compatibility: removes the API chat webhook (the channel and its users stay).",
        None,
        (200, None),
    ),
    op(
        "post",
        "/api/apichat/{channel_id}",
        Caller::UchatFlowKey,
        "UChat's bot_url (served by ingress-custom): the partner's system sends as one of its \
         users (user_id; type text, payload, image, audio, video or file; text, payload, url; \
         id for idempotency); the user's first message registers them. Answers {\"status\": \
         \"ok\", \"data\": {user_id, message_id}}; the bot's answers reach the webhook.",
        Some(schema::<patchbay_custom::uchat::ApiChatMessage>),
        (200, None),
    ),
    op(
        "post",
        "/api/webchat_apps/{webchat_app_id}/user",
        Caller::BotdistriktDomain,
        "BotDistrikt compatibility (custom channels of the botdistrikt flavour, served by \
         ingress-custom; the webchat_app_id is the channel id): registers a user, a webchat_id \
         generated when none is given, or finds a registered one; answers the bot_user. JSON or \
         form-encoded. 401 invalid_domain, webchat_id_revoked.",
        Some(schema::<patchbay_custom::botdistrikt::UserRequest>),
        (200, Some(schema::<patchbay_custom::botdistrikt::BotUser>)),
    ),
    op(
        "post",
        "/api/webchat_apps/{webchat_app_id}/message",
        Caller::BotdistriktDomain,
        "BotDistrikt compatibility: send as the user whose raw webchat_id is the Authorization \
         header; answers the bot's responses that came within PATCHBAY_CUSTOM_REPLY_WAIT_MS \
         (later ones reach the event webhook, with X-BotDistrikt-Source). 401 invalid_domain, \
         unknown_webchat_id, webchat_id_revoked.",
        Some(schema::<patchbay_custom::botdistrikt::MessageRequest>),
        (
            200,
            Some(schema::<Vec<patchbay_custom::botdistrikt::BotResponse>>),
        ),
    ),
    op(
        "get",
        "/v1/users/{user_id}",
        Caller::Bot,
        "A user's profile (404 for another bot's user).",
        None,
        (200, Some(schema::<Profile>)),
    ),
    op(
        "post",
        "/v1/auth/token",
        Caller::Public,
        "Exchange a bot's API key (`{\"api_key\"}`), or the previous refresh token \
         (`{\"refresh_token\"}`), for an access token with the key's scopes (a Bearer for \
         every /v1 route, PATCHBAY_ACCESS_TOKEN_TTL_MS) and the next refresh token \
         (PATCHBAY_REFRESH_TOKEN_TTL_MS). A refresh token works once: presented again, it \
         revokes every token of its family. 401 invalid_api_key, invalid_refresh_token or \
         refresh_token_reused; revoking the API key ends its tokens.",
        Some(schema::<crate::settings::TokenBody>),
        (200, Some(schema::<patchbay_contract::IssuedTokens>)),
    ),
    op(
        "patch",
        "/v1/users/{user_id}",
        Caller::Bot,
        "Sets and removes the user's contact fields (`{\"fields\": {\"licenseplate\": \
         \"XX-99-WZ\", \"old\": null}}`); answers the profile. 422 invalid_field names the \
         field past a limit (names 1-64 of A-Z a-z 0-9 _ -, from a letter; values at most \
         1,024 characters; at most 64 fields); `{\"broadcasts\": false}` opts the user out of \
         the bot's broadcasts (`true` back in). 404 for another bot's user.",
        Some(schema::<crate::users::PatchUser>),
        (200, Some(schema::<Profile>)),
    ),
    op(
        "post",
        "/v1/users/{user_id}/tokens/revoke",
        Caller::Bot,
        "A custom channel's user: every token issued until now stops working (401 token_revoked); the app registers the user again with its back end's proof. 404 for another bot's user, 422 not_custom for another platform's.",
        None,
        (200, Some(schema::<patchbay_custom::api::RevokedTokens>)),
    ),
    op(
        "post",
        "/v1/channels/{channel_id}/tokens/revoke",
        Caller::Bot,
        "Every user token of one of the bot's custom channels issued until now stops working (401 token_revoked). 404 for another bot's channel, 422 not_custom for another platform's.",
        None,
        (200, Some(schema::<patchbay_custom::api::RevokedTokens>)),
    ),
    op(
        "post",
        "/v1/media",
        Caller::Bot,
        "Upload one file (multipart, part `file` with its Content-Type) for the bot's sends: \
         `{\"type\": \"image\", \"media_id\": \"med_…\"}` in any message. Checked against \
         what each platform of the bot's channels can send (422 when none can), \
         PATCHBAY_MEDIA_MAX_BYTES (413 too_large) and the bot's PATCHBAY_MEDIA_QUOTA_BYTES \
         (413 quota_exceeded); kept 30 days.",
        None,
        (201, Some(schema::<crate::media::Uploaded>)),
    ),
    op(
        "get",
        "/media/{bot_id}/{media_id}",
        Caller::Public,
        "A file the bot uploaded, for the platforms to fetch (the URL sends carry; no \
         credentials: the media id is the capability). 404 for anything else.",
        None,
        (200, None),
    ),
    op(
        "get",
        "/v1/media/{media_id}",
        Caller::Bot,
        "A file a user sent (the `media_id` of a media event), streamed with its Content-Type; \
         downloaded from the platform on first request. 404 for another bot's media or a file \
         the platform no longer has, 413 over PATCHBAY_MEDIA_MAX_BYTES.",
        None,
        (200, None),
    ),
    Operation {
        query: &[
            ("platform", "e.g. telegram (with platform_user_id)"),
            (
                "platform_user_id",
                "the platform's id of the user (with platform)",
            ),
            (
                "field.<name>",
                "instead of those: the users whose field <name> has this value (one or more, \
                 all must hold)",
            ),
            ("limit", "with field.<name>: page size, 1-200 (50)"),
            (
                "after",
                "with field.<name>: the previous page's next_cursor",
            ),
        ],
        ..op(
            "get",
            "/v1/users",
            Caller::Bot,
            "A user's profile by the platform's user id; or, with field.<name>=<value>, a page \
             of the users whose contact fields hold those values (`{\"users\", \
             \"next_cursor\"}`).",
            None,
            (200, Some(schema::<crate::users::Found>)),
        )
    },
    op(
        "post",
        "/v1/codes/claim",
        Caller::Bot,
        "Claim a one-time code once: the user's profile; 410 when unknown, expired or used.",
        Some(schema::<ClaimBody>),
        (200, Some(schema::<Profile>)),
    ),
    op(
        "get",
        "/go/{token}",
        Caller::Public,
        "Opened by the user's browser: mints a one-time code and redirects (302) to the \
         tenant's page; 404 or 410 pages otherwise.",
        None,
        (302, None),
    ),
    op(
        "get",
        "/openapi.json",
        Caller::Public,
        "This document.",
        None,
        (200, None),
    ),
];

/// An error answer's body.
#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
struct ErrorBody {
    error: ErrorDetail,
}

/// Answer of BrandChat's `file/upload`.
#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
struct FileUploaded {
    /// The file's id, for messages' `fileId`.
    #[serde(rename = "fileId")]
    file_id: i64,
}

/// Body of BrandChat's `user/profile`.
#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
struct BrandchatUserBody {
    /// BrandChat's numeric user id.
    #[serde(rename = "userId")]
    user_id: i64,
}

#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
struct ErrorDetail {
    /// Machine-readable, e.g. `invalid_request`, `rate_limited`.
    code: String,
    /// For people.
    message: String,
}

fn path_parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect()
}

/// The whole document.
/// (method, path) of every operation a bot's API key calls.
#[cfg(test)]
pub(crate) fn bot_operations() -> Vec<(String, String)> {
    OPERATIONS
        .iter()
        .filter(|o| o.caller == Caller::Bot)
        .map(|o| (o.method.to_owned(), o.path.to_owned()))
        .collect()
}

pub(crate) fn document() -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    let mut g = settings.into_generator();
    let error = g.subschema_for::<ErrorBody>();
    let mut paths: Map<String, Value> = Map::new();
    for o in OPERATIONS {
        let mut parameters = path_parameters(o.path);
        parameters.extend(o.query.iter().map(|(name, description)| {
            json!({"name": name, "in": "query", "required": false,
                   "description": description, "schema": {"type": "string"}})
        }));
        parameters.extend(o.headers.iter().map(|(name, description)| {
            json!({"name": name, "in": "header", "required": false,
                   "description": description, "schema": {"type": "string"}})
        }));
        let (status, body) = o.response;
        let mut responses = Map::new();
        let success = match body {
            Some(f) => json!({"description": "Success",
                              "content": {"application/json": {"schema": f(&mut g)}}}),
            None => json!({"description": "Success"}),
        };
        responses.insert(status.to_string(), success);
        let error_response = |d: &str| json!({"description": d, "content": {"application/json": {"schema": error.clone()}}});
        if o.caller != Caller::Public {
            responses.insert("401".into(), error_response("Missing or wrong credentials"));
        }
        if o.request.is_some() {
            responses.insert(
                "422".into(),
                error_response("Invalid request; the message names the field"),
            );
        }
        if o.caller == Caller::Bot {
            responses.insert(
                "403".into(),
                error_response(
                    "missing_scope: the API key lacks the scope this route needs (in security)",
                ),
            );
            responses.insert(
                "429".into(),
                json!({"description": "Over the bot's request limit; see Retry-After",
                       "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                       "content": {"application/json": {"schema": error.clone()}}}),
            );
        }
        responses.insert(
            "503".into(),
            error_response("A dependency is unavailable; retry"),
        );
        let mut operation = json!({
            "summary": o.summary,
            "operationId": format!("{}{}", o.method, o.path.replace(['/', '{', '}', '.'], "_")),
            "responses": responses,
        });
        if !parameters.is_empty() {
            operation["parameters"] = Value::Array(parameters);
        }
        if let Some(f) = o.request {
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": f(&mut g)}}
            });
        }
        match o.caller {
            Caller::Operator => operation["security"] = json!([{"operatorToken": []}]),
            Caller::Bot => {
                let method: axum::http::Method =
                    o.method.to_uppercase().parse().unwrap_or_default();
                let scope = crate::scopes::required(&method, o.path).unwrap_or("*");
                operation["security"] = json!([{"botApiKey": [scope]}]);
            }
            Caller::DomainKey => operation["security"] = json!([{"customDomainKey": []}]),
            Caller::Partner => operation["security"] = json!([{"partnerKey": []}]),
            Caller::Brandchat => operation["security"] = json!([{"brandchatSignature": []}]),
            Caller::UserToken => operation["security"] = json!([{"customUserToken": []}]),
            Caller::BotdistriktDomain => {
                operation["security"] = json!([{"botdistriktDomain": []}]);
            }
            Caller::ChatApiToken => operation["security"] = json!([{"chatApiToken": []}]),
            Caller::Web1on1Token => operation["security"] = json!([{"web1on1Token": []}]),
            Caller::UchatPartner => operation["security"] = json!([{"uchatPartner": []}]),
            Caller::UchatFlowKey => operation["security"] = json!([{"uchatFlowKey": []}]),
            Caller::Public => {}
        }
        let entry = paths
            .entry(o.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[o.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Patchbay API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "One API for every messenger. Errors are {\"error\": {\"code\", \"message\"}}."
        },
        "paths": paths,
        "components": {
            "schemas": g.take_definitions(true),
            "securitySchemes": {
                "botApiKey": {"type": "http", "scheme": "bearer",
                              "description": "A bot's API key; each operation names the scope it needs (docs/api.md, \"Scopes\")"},
                "operatorToken": {"type": "http", "scheme": "bearer",
                                  "description": "The operator token (PATCHBAY_ADMIN_TOKEN)"},
                "brandchatSignature": {"type": "apiKey", "in": "header", "name": "X-Chat-Signature",
                                       "description": "BrandChat compatibility: hex HMAC-SHA1 of the raw body keyed with the bot's API key; the bot is named by ?bot=<bot id>"},
                "botdistriktDomain": {"type": "apiKey", "in": "header", "name": "Authorization",
                                      "description": "BotDistrikt compatibility: the body's domain is the custom channel's domain key; a message's Authorization is the user's raw webchat_id"},
                "chatApiToken": {"type": "apiKey", "in": "query", "name": "token",
                                 "description": "chat-api compatibility: any API key or access token of the bot, with the scope the method needs"},
                "web1on1Token": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                 "description": "Web1on1 compatibility: the token of POST /web1on1/v2/auth/token (a JWT wrapping an access token), or any credential of the bot"},
                "uchatPartner": {"type": "http", "scheme": "bearer",
                                 "description": "UChat compatibility: a partner's key (ppk_…) where the workspace enabled the partner's app, or the operator token"},
                "uchatFlowKey": {"type": "http", "scheme": "bearer",
                                 "description": "UChat compatibility: an API key of the API chat channel's bot with messages:send (UChat's flow API key)"},
                "customDomainKey": {"type": "http", "scheme": "bearer",
                                    "description": "A custom channel's domain key"},
                "partnerKey": {"type": "http", "scheme": "bearer",
                               "description": "A partner's key (ppk_…, from POST /admin/v1/partners)"},
                "customUserToken": {"type": "http", "scheme": "bearer",
                                    "description": "A custom channel's user token"}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every `(method, path)` mounted with `.route(path, ...)` in the sources of this crate and
    /// of `ingress-custom`, whose routes the document describes as well.
    fn mounted() -> BTreeSet<(String, String)> {
        let dirs = [
            concat!(env!("CARGO_MANIFEST_DIR"), "/src"),
            concat!(env!("CARGO_MANIFEST_DIR"), "/../ingress-custom/src"),
        ];
        let mut out = BTreeSet::new();
        for entry in dirs.iter().flat_map(|d| std::fs::read_dir(d).unwrap()) {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for chunk in text.split(".route(").skip(1) {
                let Some(rest) = chunk.trim_start().strip_prefix('"') else {
                    continue;
                };
                let Some((path, after)) = rest.split_once('"') else {
                    continue;
                };
                // The method router runs to the closing parenthesis of `.route(`.
                let mut depth = 1;
                let end = after
                    .char_indices()
                    .find(|(_, c)| {
                        match c {
                            '(' => depth += 1,
                            ')' => depth -= 1,
                            _ => {}
                        }
                        depth == 0
                    })
                    .map_or(after.len(), |(i, _)| i);
                let router = &after[..end];
                for method in ["get", "post", "put", "patch", "delete"] {
                    let called = router
                        .match_indices(&format!("{method}("))
                        .any(|(i, _)| i == 0 || !router.as_bytes()[i - 1].is_ascii_alphanumeric());
                    if called {
                        out.insert((method.to_owned(), path.to_owned()));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn every_mounted_route_is_documented_and_nothing_else() {
        let mounted = mounted();
        assert!(
            mounted.len() > 10,
            "the route scan found too little: {mounted:?}"
        );
        let documented: BTreeSet<(String, String)> = OPERATIONS
            .iter()
            .map(|o| (o.method.to_owned(), o.path.to_owned()))
            .collect();
        let undocumented: Vec<_> = mounted.difference(&documented).collect();
        let stale: Vec<_> = documented.difference(&mounted).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from OPERATIONS: {undocumented:?}"
        );
        assert!(
            stale.is_empty(),
            "OPERATIONS lists routes that are not mounted: {stale:?}"
        );
    }

    #[test]
    fn the_document_is_openapi_3_1_with_resolvable_references() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "dangling $ref to {name}");
        }
        let send = &doc["paths"]["/v1/messages"]["post"];
        assert!(send["requestBody"]["content"]["application/json"]["schema"].is_object());
        assert!(send["responses"]["429"].is_object());
    }
}
