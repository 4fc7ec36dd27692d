//! `patchbay`: runs every service in one process (`patchbay all`) or one of them
//! (`patchbay service <name>`), and wraps the admin API for operators.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "patchbay",
    version,
    about = "Self-hosted multi-messenger bot gateway"
)]
struct Cli {
    /// Base URL of the Patchbay HTTP API.
    #[arg(
        long,
        env = "PATCHBAY_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// Operator token for the admin API.
    #[arg(
        long,
        env = "PATCHBAY_ADMIN_TOKEN",
        global = true,
        hide_env_values = true
    )]
    token: Option<String>,
    /// Print the API's JSON answer instead of a summary.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every service in this process, on one HTTP listener, talking over NATS.
    All,
    /// Run one service (the same as its own binary).
    Service {
        /// One of: auth, bot-router, normaliser, webhook-dispatcher, outbound-telegram,
        /// ingress-telegram, outbound-custom, ingress-custom, outbound-messenger,
        /// ingress-messenger, outbound-whatsapp, ingress-whatsapp, outbound-wechat,
        /// ingress-wechat, outbound-kik, ingress-kik, outbound-viber, ingress-viber,
        /// outbound-line, ingress-line, api.
        name: String,
    },
    /// Create or update the JetStream streams and buckets and apply every PostgreSQL
    /// migration, then exit (run it as a Job before the services; safe to run concurrently).
    Migrate,
    /// Bots.
    #[command(subcommand)]
    Bots(Bots),
    /// Channels.
    #[command(subcommand)]
    Channels(Channels),
    /// Tenants (operator).
    #[command(subcommand)]
    Tenants(Tenants),
    /// API keys (operator).
    #[command(subcommand)]
    Keys(Keys),
    /// A bot's deliveries (with the bot's API key).
    #[command(subcommand)]
    Deliveries(Deliveries),
    /// A bot's callback settings (with the bot's API key).
    #[command(subcommand)]
    Webhook(Webhook),
    /// A bot's users and their contact fields (with the bot's API key).
    #[command(subcommand)]
    Users(Users),
    /// A bot's template registry (with the bot's API key).
    #[command(subcommand)]
    Templates(Templates),
    /// A bot's broadcasts (with the bot's API key).
    #[command(subcommand)]
    Broadcasts(Broadcasts),
    /// Partners (operator), and a partner's apps, installations and tokens (with the
    /// partner's key).
    #[command(subcommand)]
    Partners(Partners),
    /// The partner apps a bot enabled; enabling and disabling one (with the bot's API key).
    #[command(subcommand)]
    Apps(Apps),
    /// Exchange an API key (or the last refresh token) for an access token and the next
    /// refresh token (POST /v1/auth/token).
    Token {
        /// The bot's API key.
        #[arg(
            long,
            env = "PATCHBAY_API_KEY",
            hide_env_values = true,
            conflicts_with = "refresh_token"
        )]
        api_key: Option<String>,
        /// The refresh token of the last exchange (used up by this one).
        #[arg(long, env = "PATCHBAY_REFRESH_TOKEN", hide_env_values = true)]
        refresh_token: Option<String>,
    },
    /// Send a text, or a template of the bot's registry, as a bot (uses the bot's API key).
    Send {
        /// The bot's API key.
        #[arg(long, env = "PATCHBAY_API_KEY", hide_env_values = true)]
        api_key: String,
        /// The recipient's user id (`usr_…`).
        #[arg(long)]
        user: String,
        /// The text.
        #[arg(
            long,
            required_unless_present = "template",
            conflicts_with = "template"
        )]
        text: Option<String>,
        /// A template of the bot's registry (`tpl_…`), rendered for the user's channel.
        #[arg(long)]
        template: Option<String>,
        /// A value of the template's variables, NAME=VALUE (repeatable).
        #[arg(long = "meta", value_name = "NAME=VALUE", requires = "template")]
        meta: Vec<String>,
    },
    /// Pass a conversation to a human agent (`--to human --agent Ana`: the bot's messages
    /// are held back) or back to the bot (`--to bot`).
    Handover {
        /// The bot's API key.
        #[arg(long, env = "PATCHBAY_API_KEY", hide_env_values = true)]
        api_key: String,
        /// The conversation (`conv_…`).
        #[arg(long)]
        conversation: String,
        /// `human` or `bot`.
        #[arg(long)]
        to: String,
        /// The agent taking it.
        #[arg(long)]
        agent: Option<String>,
    },
    /// Print a fresh master key (base64 of 32 random bytes) for PATCHBAY_MASTER_KEY.
    GenMasterKey,
    /// The master keys: their ids, and re-sealing every stored secret with the current one
    /// (docs/security.md, "Master key rotation").
    #[command(subcommand)]
    MasterKey(MasterKeyCommand),
    /// Write one NATS user per service with its role's permissions: `<dir>/auth.conf` for the
    /// NATS server to include, `<dir>/passwords/<service>` for each service's
    /// PATCHBAY_NATS_PASSWORD (kept when run again). Uses PATCHBAY_NATS_PREFIX and
    /// PATCHBAY_PARTITIONS: run it again when they change.
    NatsAuth {
        /// Where to write.
        #[arg(long)]
        dir: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum MasterKeyCommand {
    /// Print the id of PATCHBAY_MASTER_KEY and of each PATCHBAY_MASTER_KEY_ACCEPTED key (sealed
    /// values name their key by this id; it tells nothing of the key).
    Id,
    /// Seal every stored secret (PostgreSQL and the NATS buckets) again with PATCHBAY_MASTER_KEY,
    /// opening with it or a PATCHBAY_MASTER_KEY_ACCEPTED key; prints counts per place. Safe to
    /// run while the services run, and again after an interruption. Connects as `patchbay
    /// migrate` does (its NATS user, PATCHBAY_DATABASE_URL). Exits 1 when a value cannot be
    /// opened.
    Reseal {
        /// Only count: exit 0 when every value is sealed with the current key (an accepted key
        /// may then be dropped), 1 when not.
        #[arg(long)]
        check: bool,
    },
}

#[derive(Subcommand)]
enum Bots {
    /// Create a bot; prints its id, API key and webhook secret (shown once).
    Create {
        /// Name.
        #[arg(long)]
        name: String,
        /// Callback URL.
        #[arg(long)]
        webhook_url: Option<String>,
        /// Event subscriptions, comma separated (default: message.received,user.*).
        #[arg(long, value_delimiter = ',')]
        events: Option<Vec<String>>,
        /// Owning tenant (default tenant when absent).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List bots (no secrets).
    List {
        /// Only this tenant's bots.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Disable a bot: it receives and sends nothing, its keys stop working.
    Disable {
        /// The bot.
        #[arg(long)]
        bot: String,
    },
    /// Enable a disabled bot.
    Enable {
        /// The bot.
        #[arg(long)]
        bot: String,
    },
}

#[derive(Subcommand)]
enum Tenants {
    /// Create a tenant.
    Create {
        /// Name.
        #[arg(long)]
        name: String,
    },
    /// List tenants.
    List,
}

#[derive(Subcommand)]
enum Partners {
    /// Add a partner (operator). Prints its key once.
    Create {
        /// Name.
        #[arg(long)]
        name: String,
    },
    /// Every partner (operator).
    List,
    /// Publish an app from a JSON file (`{"name", "description"?, "callback_url", "events",
    /// "scopes"}`; docs/api.md, "Partner apps"); `-` reads standard input. Prints its webhook
    /// secret once.
    CreateApp {
        /// The partner's key.
        #[arg(long, env = "PATCHBAY_PARTNER_KEY", hide_env_values = true)]
        partner_key: String,
        /// The definition.
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// The partner's apps.
    Apps {
        /// The partner's key.
        #[arg(long, env = "PATCHBAY_PARTNER_KEY", hide_env_values = true)]
        partner_key: String,
    },
    /// Replace an app's definition from a JSON file.
    ReplaceApp {
        /// The partner's key.
        #[arg(long, env = "PATCHBAY_PARTNER_KEY", hide_env_values = true)]
        partner_key: String,
        /// The app (`app_…`).
        #[arg(long)]
        app: String,
        /// The definition.
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// Withdraw an app: every installation ends.
    DeleteApp {
        /// The partner's key.
        #[arg(long, env = "PATCHBAY_PARTNER_KEY", hide_env_values = true)]
        partner_key: String,
        /// The app (`app_…`).
        #[arg(long)]
        app: String,
    },
    /// Where the partner's apps are enabled.
    Installations {
        /// The partner's key.
        #[arg(long, env = "PATCHBAY_PARTNER_KEY", hide_env_values = true)]
        partner_key: String,
    },
    /// An access token for an installation's bot.
    Token {
        /// The partner's key.
        #[arg(long, env = "PATCHBAY_PARTNER_KEY", hide_env_values = true)]
        partner_key: String,
        /// The installation (`ins_…`).
        #[arg(long)]
        installation: String,
    },
}

#[derive(Subcommand)]
enum Apps {
    /// The apps enabled on the bot.
    List {
        /// The bot's API key.
        #[arg(long, env = "PATCHBAY_API_KEY", hide_env_values = true)]
        api_key: String,
    },
    /// An app: its partner, callback, events and the scopes it asks for.
    Get {
        /// The bot's API key.
        #[arg(long, env = "PATCHBAY_API_KEY", hide_env_values = true)]
        api_key: String,
        /// The app (`app_…`).
        #[arg(long)]
        app: String,
    },
    /// Enable an app on the bot: on every channel, or on those named (repeatable).
    Enable {
        /// The bot's API key.
        #[arg(long, env = "PATCHBAY_API_KEY", hide_env_values = true)]
        api_key: String,
        /// The app (`app_…`).
        #[arg(long)]
        app: String,
        /// A channel to enable it on.
        #[arg(long = "channel")]
        channels: Vec<String>,
    },
    /// Disable an app on the bot: its events stop, its tokens stop working.
    Disable {
        /// The bot's API key.
        #[arg(long, env = "PATCHBAY_API_KEY", hide_env_values = true)]
        api_key: String,
        /// The app (`app_…`).
        #[arg(long)]
        app: String,
    },
}

#[derive(Subcommand)]
enum Templates {
    /// Store a template from a JSON file (`{"name", "text"?, "whatsapp"?, "wechat"?}`;
    /// docs/api.md, "Templates"); `-` reads standard input.
    Create {
        /// The bot's API key.
        #[arg(long, env = "PATCHBAY_API_KEY", hide_env_values = true)]
        api_key: String,
        /// The definition.
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// Replace a template's definition from a JSON file.
    Replace {
        /// The bot's API key.
        #[arg(long, env = "PATCHBAY_API_KEY", hide_env_values = true)]
        api_key: String,
        /// The template (`tpl_…`).
        #[arg(long)]
        template: String,
        /// The definition.
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// The bot's templates, by name.
    List {
        /// The bot's API key.
        #[arg(long, env = "PATCHBAY_API_KEY", hide_env_values = true)]
        api_key: String,
    },
    /// One template.
    Get {
        /// The bot's API key.
        #[arg(long, env = "PATCHBAY_API_KEY", hide_env_values = true)]
        api_key: String,
        /// The template (`tpl_…`).
        #[arg(long)]
        template: String,
    },
    /// Delete a template.
    Delete {
        /// The bot's API key.
        #[arg(long, env = "PATCHBAY_API_KEY", hide_env_values = true)]
        api_key: String,
        /// The template (`tpl_…`).
        #[arg(long)]
        template: String,
    },
}

#[derive(Subcommand)]
enum Broadcasts {
    /// Start a broadcast from a JSON file (`{"audience", "messages" | "template",
    /// "start_at"?}`; docs/api.md, "Broadcasts"); `-` reads standard input.
    Create {
        /// The bot's API key.
        #[arg(long, env = "PATCHBAY_API_KEY", hide_env_values = true)]
        api_key: String,
        /// The broadcast.
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// The bot's broadcasts, newest first, with their counts.
    List {
        /// The bot's API key.
        #[arg(long, env = "PATCHBAY_API_KEY", hide_env_values = true)]
        api_key: String,
    },
    /// One broadcast: state and counts.
    Get {
        /// The bot's API key.
        #[arg(long, env = "PATCHBAY_API_KEY", hide_env_values = true)]
        api_key: String,
        /// The broadcast (`brd_…`).
        #[arg(long)]
        broadcast: String,
    },
    /// Follow a broadcast's progress, a line whenever its counts change, until it completes or
    /// is cancelled.
    Watch {
        /// The bot's API key.
        #[arg(long, env = "PATCHBAY_API_KEY", hide_env_values = true)]
        api_key: String,
        /// The broadcast (`brd_…`).
        #[arg(long)]
        broadcast: String,
        /// How often to look, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        every_ms: u64,
    },
    /// Hold what has not gone out.
    Pause {
        /// The bot's API key.
        #[arg(long, env = "PATCHBAY_API_KEY", hide_env_values = true)]
        api_key: String,
        /// The broadcast (`brd_…`).
        #[arg(long)]
        broadcast: String,
    },
    /// Go on after a pause.
    Resume {
        /// The bot's API key.
        #[arg(long, env = "PATCHBAY_API_KEY", hide_env_values = true)]
        api_key: String,
        /// The broadcast (`brd_…`).
        #[arg(long)]
        broadcast: String,
    },
    /// Stop for good: what has not gone out stays unsent.
    Cancel {
        /// The bot's API key.
        #[arg(long, env = "PATCHBAY_API_KEY", hide_env_values = true)]
        api_key: String,
        /// The broadcast (`brd_…`).
        #[arg(long)]
        broadcast: String,
    },
}

/// The columns a broadcast is shown with.
const BROADCAST_COLUMNS: &[&str] = &[
    "id",
    "state",
    "counts.recipients",
    "counts.queued",
    "counts.sending",
    "counts.sent",
    "counts.delivered",
    "counts.read",
    "counts.failed",
    "counts.skipped",
];

/// `patchbay broadcasts watch`: a line per change of the broadcast's state or counts, until it
/// is finished.
async fn watch_broadcast(
    http: &reqwest::Client,
    base: &str,
    api_key: &str,
    id: &str,
    every: std::time::Duration,
) -> anyhow::Result<()> {
    let mut last = Value::Null;
    let started = std::time::Instant::now();
    loop {
        let response = http
            .get(format!("{base}/v1/broadcasts/{}", query_escape(id)))
            .bearer_auth(api_key)
            .send()
            .await
            .with_context(|| format!("cannot reach {base}"))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "{status}: {}",
                answer["error"]["message"].as_str().unwrap_or("no details")
            );
        }
        let now = json!([answer["state"], answer["counts"]]);
        if now != last {
            let c = &answer["counts"];
            println!(
                "{:>6.1}s {:<10} {}/{} sent, {} delivered, {} read, {} failed, {} skipped, \
                 {} queued, {} sending",
                started.elapsed().as_secs_f64(),
                cell(&answer["state"]),
                c["sent"],
                c["recipients"],
                c["delivered"],
                c["read"],
                c["failed"],
                c["skipped"],
                c["queued"],
                c["sending"]
            );
            last = now;
        }
        if matches!(answer["state"].as_str(), Some("completed" | "cancelled")) {
            for (what, reasons) in [
                ("failed", &answer["failed_reasons"]),
                ("skipped", &answer["skipped_reasons"]),
            ] {
                if let Some(reasons) = reasons.as_object() {
                    for (reason, n) in reasons {
                        println!("{what:<8} {reason}: {n}");
                    }
                }
            }
            return Ok(());
        }
        tokio::time::sleep(every).await;
    }
}

#[derive(Subcommand)]
enum Users {
    /// A user's profile, with its contact fields.
    Get {
        /// The bot's API key.
        #[arg(long, env = "PATCHBAY_API_KEY", hide_env_values = true)]
        api_key: String,
        /// The user (`usr_…`).
        #[arg(long)]
        user: String,
    },
    /// Set contact fields (`--set licenseplate=XX-99-WZ`, repeatable) and remove them
    /// (`--remove old`, repeatable).
    SetFields {
        /// The bot's API key.
        #[arg(long, env = "PATCHBAY_API_KEY", hide_env_values = true)]
        api_key: String,
        /// The user (`usr_…`).
        #[arg(long)]
        user: String,
        /// NAME=VALUE.
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// A field to remove.
        #[arg(long = "remove", value_name = "NAME")]
        remove: Vec<String>,
    },
    /// The users whose contact fields hold every `--field NAME=VALUE`, oldest id first.
    Find {
        /// The bot's API key.
        #[arg(long, env = "PATCHBAY_API_KEY", hide_env_values = true)]
        api_key: String,
        /// NAME=VALUE (repeatable: all must hold).
        #[arg(long = "field", value_name = "NAME=VALUE", required = true)]
        field: Vec<String>,
        /// At most this many (1 to 200).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// The previous page's next_cursor.
        #[arg(long)]
        after: Option<String>,
    },
}

#[derive(Subcommand)]
enum Deliveries {
    /// The bot's deliveries, newest first.
    List {
        /// The bot's API key.
        #[arg(long, env = "PATCHBAY_API_KEY", hide_env_values = true)]
        api_key: String,
        /// pending, delivered or failed.
        #[arg(long)]
        status: Option<String>,
        /// At most this many (1 to 100).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Deliver one event once more (same webhook-id).
    Retry {
        /// The bot's API key.
        #[arg(long, env = "PATCHBAY_API_KEY", hide_env_values = true)]
        api_key: String,
        /// The event id (`evt_…`).
        #[arg(long)]
        event: String,
    },
    /// Deliver the dead-lettered events since a time again.
    Replay {
        /// The bot's API key.
        #[arg(long, env = "PATCHBAY_API_KEY", hide_env_values = true)]
        api_key: String,
        /// RFC 3339 time, e.g. 2026-11-21T10:00:00Z.
        #[arg(long)]
        since: String,
        /// At most this many, the oldest first (the bot may replay PATCHBAY_REPLAY_PER_MINUTE
        /// a minute; `more: true` says to run it again).
        #[arg(long)]
        limit: Option<u32>,
    },
}

#[derive(Subcommand)]
enum Keys {
    /// Issue a new API key; the bot's current keys keep working for the overlap.
    Rotate {
        /// The bot.
        #[arg(long)]
        bot: String,
        /// Seconds the current keys stay valid (the server's default when absent).
        #[arg(long)]
        overlap_seconds: Option<u64>,
        /// What the new key may do (`messages:send`, `deliveries:*`, …; repeatable; absent:
        /// everything). docs/api.md, "Scopes".
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
    },
    /// Revoke one key at once.
    Revoke {
        /// The bot.
        #[arg(long)]
        bot: String,
        /// The key's id (`key_…`).
        #[arg(long)]
        key: String,
    },
}

#[derive(Subcommand)]
enum Webhook {
    /// Change the callback settings (a new URL must echo hub.challenge first).
    Set {
        /// The bot's API key.
        #[arg(long, env = "PATCHBAY_API_KEY", hide_env_values = true)]
        api_key: String,
        /// Callback URL (`--url` is Patchbay's own).
        #[arg(long)]
        callback_url: Option<String>,
        /// Event subscriptions, comma separated (wildcards: `message.*`, `*`).
        #[arg(long, value_delimiter = ',')]
        events: Option<Vec<String>>,
        /// Platforms whose events are delivered, comma separated (all when absent).
        #[arg(long, value_delimiter = ',')]
        platforms: Option<Vec<String>>,
        /// `native` or `brandchat`.
        #[arg(long, default_value = "native")]
        flavour: String,
    },
    /// Rotate the signing secret; both sign callbacks during the overlap.
    RotateSecret {
        /// The bot's API key.
        #[arg(long, env = "PATCHBAY_API_KEY", hide_env_values = true)]
        api_key: String,
        /// Seconds the current secret keeps signing (the server's default when absent).
        #[arg(long)]
        overlap_seconds: Option<u64>,
    },
}

#[derive(Subcommand)]
enum Channels {
    /// A bot's channels (no credentials), with each one's setup at its platform (Kik).
    List {
        /// The bot.
        #[arg(long)]
        bot: String,
    },
    /// Enable or disable one of a bot's channels (a disabled channel receives and sends
    /// nothing; a Viber channel's webhook is removed at Viber meanwhile).
    SetEnabled {
        /// The bot.
        #[arg(long)]
        bot: String,
        /// The channel.
        #[arg(long)]
        channel: String,
        /// `true` or `false`.
        #[arg(long, action = clap::ArgAction::Set)]
        enabled: bool,
    },
    /// Connect a bot to a Telegram bot.
    CreateTelegram {
        /// The bot.
        #[arg(long)]
        bot: String,
        /// The token from @BotFather.
        #[arg(long, env = "TELEGRAM_BOT_TOKEN", hide_env_values = true)]
        bot_token: String,
        /// The secret_token you give setWebhook.
        #[arg(long)]
        secret_token: String,
        /// Another Bot API server (operators only).
        #[arg(long)]
        api_base_url: Option<String>,
    },
    /// Create a custom channel (an app, a device, your own web chat). Prints the generated
    /// domain key and event webhook secret once.
    CreateCustom {
        /// The bot.
        #[arg(long)]
        bot: String,
        /// Where messages for the channel's users are pushed (signed).
        #[arg(long)]
        event_webhook_url: Option<String>,
        /// Your own domain key (at least 22 characters); generated when absent.
        #[arg(long, env = "CUSTOM_DOMAIN_KEY", hide_env_values = true)]
        domain_key: Option<String>,
        /// How long user tokens live, in seconds (300 to 31536000; 30 days when absent).
        #[arg(long)]
        token_ttl_seconds: Option<u64>,
        /// Every registration needs the app's back end's X-Patchbay-Registration, a new
        /// external_id too.
        #[arg(long)]
        require_signed_registration: bool,
    },
    /// Read a channel's profile at its platform, or change it: `--set name=Acme` (texts,
    /// repeatable), `--remove description` (repeatable), `--file profile.json` (an object in the
    /// platform's profile shape, for lists and objects; `-` reads standard input).
    Profile {
        /// The bot's API key.
        #[arg(long, env = "PATCHBAY_API_KEY", hide_env_values = true)]
        api_key: String,
        /// The channel.
        #[arg(long)]
        channel: String,
        /// NAME=TEXT.
        #[arg(long = "set", value_name = "NAME=TEXT")]
        set: Vec<String>,
        /// A key to remove.
        #[arg(long = "remove", value_name = "NAME")]
        remove: Vec<String>,
        /// A JSON object of keys to change.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
    },
    /// Revoke every user token of one of the bot's custom channels issued until now.
    RevokeTokens {
        /// The bot's API key.
        #[arg(long, env = "PATCHBAY_API_KEY", hide_env_values = true)]
        api_key: String,
        /// The custom channel.
        #[arg(long)]
        channel: String,
    },
    /// Revoke every token of one custom channel's user issued until now.
    RevokeUserTokens {
        /// The bot's API key.
        #[arg(long, env = "PATCHBAY_API_KEY", hide_env_values = true)]
        api_key: String,
        /// The user (`usr_…`).
        #[arg(long)]
        user: String,
    },
    /// Connect a bot to a Facebook Page (Messenger).
    CreateMessenger {
        /// The bot.
        #[arg(long)]
        bot: String,
        /// The Page's numeric id.
        #[arg(long)]
        page_id: String,
        /// A Page access token with pages_messaging.
        #[arg(long, env = "MESSENGER_PAGE_ACCESS_TOKEN", hide_env_values = true)]
        page_access_token: String,
        /// The Meta app's secret (signs the webhooks).
        #[arg(long, env = "META_APP_SECRET", hide_env_values = true)]
        app_secret: String,
        /// The verify token entered in the App Dashboard.
        #[arg(long)]
        verify_token: String,
        /// Another Graph API base URL, with its version (operators only).
        #[arg(long)]
        api_base_url: Option<String>,
    },
    /// Connect a bot to a WhatsApp business phone number (Cloud API).
    CreateWhatsapp {
        /// The bot.
        #[arg(long)]
        bot: String,
        /// The phone number's id (not the number).
        #[arg(long)]
        phone_number_id: String,
        /// A system-user or business integration token.
        #[arg(long, env = "WHATSAPP_ACCESS_TOKEN", hide_env_values = true)]
        access_token: String,
        /// The Meta app's secret (signs the webhooks).
        #[arg(long, env = "META_APP_SECRET", hide_env_values = true)]
        app_secret: String,
        /// The verify token entered in the App Dashboard.
        #[arg(long)]
        verify_token: String,
        /// Another Graph API base URL, with its version (operators only).
        #[arg(long)]
        api_base_url: Option<String>,
    },
    /// Connect a bot to a WeChat Official Account.
    CreateWechat {
        /// The bot.
        #[arg(long)]
        bot: String,
        /// The account's AppID (wx…).
        #[arg(long)]
        app_id: String,
        /// The account's AppSecret (fetches access tokens).
        #[arg(long, env = "WECHAT_APP_SECRET", hide_env_values = true)]
        app_secret: String,
        /// The server configuration's Token (signs the webhooks; `--token` is the operator's).
        #[arg(long, env = "WECHAT_TOKEN", hide_env_values = true)]
        wechat_token: String,
        /// The server configuration's EncodingAESKey (compatible and safe message modes).
        #[arg(long, env = "WECHAT_ENCODING_AES_KEY", hide_env_values = true)]
        encoding_aes_key: Option<String>,
        /// The account has no customer-service message API (unverified subscription account).
        #[arg(long)]
        no_customer_service_api: bool,
        /// Another WeChat API base URL (operators only).
        #[arg(long)]
        api_base_url: Option<String>,
    },
    /// Connect a bot to a Kik bot (outbound-kik then sets its webhook and features at Kik).
    CreateKik {
        /// The bot.
        #[arg(long)]
        bot: String,
        /// The Kik bot's username.
        #[arg(long)]
        username: String,
        /// The Kik bot's API key (signs the webhooks, authenticates the calls).
        #[arg(long, env = "KIK_API_KEY", hide_env_values = true)]
        api_key: String,
        /// Another Kik API base URL (operators only).
        #[arg(long)]
        api_base_url: Option<String>,
    },
    /// Connect a bot to a Viber bot (outbound-viber then sets its webhook at Viber).
    CreateViber {
        /// The bot.
        #[arg(long)]
        bot: String,
        /// The Viber bot's auth token (signs the callbacks, authenticates the calls).
        #[arg(long, env = "VIBER_AUTH_TOKEN", hide_env_values = true)]
        auth_token: String,
        /// The sender name its messages show (at most 28 characters; else the bot's name).
        #[arg(long)]
        sender_name: Option<String>,
        /// The URL of the sender avatar its messages show.
        #[arg(long)]
        sender_avatar: Option<String>,
        /// Another Viber API base URL (operators only).
        #[arg(long)]
        api_base_url: Option<String>,
    },
    /// Connect a bot to a LINE Messaging API channel (then set the channel's webhook URL to
    /// the answer's webhook_path under your public URL in the LINE Developers Console).
    CreateLine {
        /// The bot.
        #[arg(long)]
        bot: String,
        /// The channel secret (signs the webhooks).
        #[arg(long, env = "LINE_CHANNEL_SECRET", hide_env_values = true)]
        channel_secret: String,
        /// A channel access token (authenticates the calls).
        #[arg(long, env = "LINE_CHANNEL_ACCESS_TOKEN", hide_env_values = true)]
        channel_access_token: String,
        /// Another LINE API base URL (operators only).
        #[arg(long)]
        api_base_url: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::All => patchbay_runtime::lifecycle::main("patchbay", &patchbay::all()),
        Command::Service { ref name } => match patchbay::by_name(name) {
            Some(start) => {
                let process: &'static str = patchbay::SERVICES
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or("patchbay", |(n, _)| n);
                patchbay_runtime::lifecycle::main(process, &[start])
            }
            None => {
                eprintln!("unknown service {name:?}");
                ExitCode::from(2)
            }
        },
        Command::Migrate => migrate(),
        Command::MasterKey(MasterKeyCommand::Id) => match master_key_ids() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("patchbay master-key id: {e}");
                ExitCode::from(2)
            }
        },
        Command::MasterKey(MasterKeyCommand::Reseal { check }) => reseal(check),
        Command::NatsAuth { ref dir } => match nats_auth(dir) {
            Ok(path) => {
                println!("{}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("patchbay nats-auth: {e:#}");
                ExitCode::FAILURE
            }
        },
        _ => match admin(cli) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `items` as a table with the `columns` given, each as wide as its widest cell.
fn table(columns: &[&str], items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| {
            columns
                .iter()
                .map(|c| {
                    // `setup.state`: a field of a nested object.
                    let path = format!("/{}", c.replace('.', "/"));
                    cell(item.pointer(&path).unwrap_or(&Value::Null))
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain(std::iter::once(c.len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let mut out = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = line(columns.iter().map(|c| c.to_uppercase()).collect());
    for r in rows {
        out.push_str(&line(r));
    }
    if items.is_empty() {
        out.push_str("(none)\n");
    }
    out
}

fn nats_auth(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let config = patchbay_config::Config::load()?;
    let subjects = patchbay_contract::Subjects::new(&config.nats_prefix)?;
    patchbay::nats_auth::write(
        dir,
        &subjects,
        &patchbay_runtime::lifecycle::topology_settings(&config),
    )
}

/// `current <id>` and `accepted <id>` lines of the configured master keys.
fn master_key_ids() -> anyhow::Result<String> {
    let keys = patchbay_config::Config::load()?.require_master_key()?;
    let mut out = format!("current  {}\n", keys.id());
    for id in keys.accepted_ids() {
        out.push_str(&format!("accepted {id}\n"));
    }
    Ok(out)
}

/// Runs an operator command (`migrate`, `master-key reseal`) on a current-thread runtime with
/// the configuration from the environment and telemetry as `service`: exits 2 when the
/// configuration is refused, 1 when the runtime cannot start, else what `run` says.
fn operation<F, Fut>(command: &str, service: &str, run: F) -> ExitCode
where
    F: FnOnce(patchbay_config::Config) -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = match patchbay_config::Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("patchbay {command}: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("patchbay {command}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let _telemetry = patchbay_runtime::telemetry::init(service, &config).ok();
        run(config).await
    })
}

fn reseal(check: bool) -> ExitCode {
    operation(
        "master-key reseal",
        "patchbay-reseal",
        |config| async move {
            match patchbay::reseal::reseal(&config, check).await {
                Ok(report) => {
                    print!("{}", report.render());
                    if report.done() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("patchbay master-key reseal: {e}");
                    ExitCode::FAILURE
                }
            }
        },
    )
}

fn migrate() -> ExitCode {
    operation("migrate", "patchbay-migrate", |config| async move {
        match patchbay::migrate(&config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "migration failed");
                eprintln!("patchbay migrate: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn admin(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let base = cli.url.trim_end_matches('/').to_owned();
        let mut method = reqwest::Method::POST;
        let (path, bearer, body, summary): (String, Option<String>, Value, &[&str]) =
            match cli.command {
                Command::GenMasterKey => {
                    println!("{}", patchbay_config::MasterKey::generate_base64()?);
                    return Ok(());
                }
                Command::Bots(Bots::Create {
                    name,
                    webhook_url,
                    events,
                    tenant,
                }) => (
                    "/admin/v1/bots".into(),
                    cli.token.clone(),
                    json!({"name": name, "tenant_id": tenant,
                       "webhook": {"url": webhook_url, "flavour": "native", "events": events}}),
                    &["id", "api_key", "webhook_secret"],
                ),
                Command::Bots(Bots::List { tenant }) => {
                    method = reqwest::Method::GET;
                    let query = tenant
                        .map(|t| format!("?tenant_id={t}"))
                        .unwrap_or_default();
                    (
                        format!("/admin/v1/bots{query}"),
                        cli.token.clone(),
                        Value::Null,
                        &[
                            "id",
                            "tenant_id",
                            "name",
                            "enabled",
                            "channels",
                            "webhook_url",
                        ],
                    )
                }
                Command::Tenants(Tenants::Create { name }) => (
                    "/admin/v1/tenants".into(),
                    cli.token.clone(),
                    json!({"name": name}),
                    &["id", "name"],
                ),
                Command::Tenants(Tenants::List) => {
                    method = reqwest::Method::GET;
                    (
                        "/admin/v1/tenants".into(),
                        cli.token.clone(),
                        Value::Null,
                        &["id", "name", "bots", "created_at"],
                    )
                }
                Command::Deliveries(Deliveries::List {
                    api_key,
                    status,
                    limit,
                }) => {
                    method = reqwest::Method::GET;
                    let status = status.map(|s| format!("&status={s}")).unwrap_or_default();
                    (
                        format!("/v1/deliveries?limit={limit}{status}"),
                        Some(api_key),
                        Value::Null,
                        &[
                            "event_id",
                            "event_type",
                            "status",
                            "attempts",
                            "last_status_code",
                        ],
                    )
                }
                Command::Deliveries(Deliveries::Retry { api_key, event }) => (
                    format!("/v1/deliveries/{event}/retry"),
                    Some(api_key),
                    json!({}),
                    &["event_id", "status"],
                ),
                Command::Deliveries(Deliveries::Replay {
                    api_key,
                    since,
                    limit,
                }) => (
                    "/v1/deliveries/replay".into(),
                    Some(api_key),
                    json!({"since": since, "limit": limit}),
                    &["replayed", "more"],
                ),
                Command::Bots(Bots::Disable { bot }) => {
                    method = reqwest::Method::PATCH;
                    (
                        format!("/admin/v1/bots/{bot}"),
                        cli.token.clone(),
                        json!({"enabled": false}),
                        &[],
                    )
                }
                Command::Bots(Bots::Enable { bot }) => {
                    method = reqwest::Method::PATCH;
                    (
                        format!("/admin/v1/bots/{bot}"),
                        cli.token.clone(),
                        json!({"enabled": true}),
                        &[],
                    )
                }
                Command::Keys(Keys::Rotate {
                    bot,
                    overlap_seconds,
                    scopes,
                }) => {
                    let mut body = json!({"overlap_seconds": overlap_seconds});
                    if !scopes.is_empty() {
                        body["scopes"] = json!(scopes);
                    }
                    (
                        format!("/admin/v1/bots/{bot}/keys/rotate"),
                        cli.token.clone(),
                        body,
                        &["key_id", "api_key", "previous_expire_at", "scopes"],
                    )
                }
                Command::Keys(Keys::Revoke { bot, key }) => (
                    format!("/admin/v1/bots/{bot}/keys/{key}/revoke"),
                    cli.token.clone(),
                    json!({}),
                    &[],
                ),
                Command::Webhook(Webhook::Set {
                    api_key,
                    callback_url,
                    events,
                    platforms,
                    flavour,
                }) => {
                    method = reqwest::Method::PUT;
                    (
                        "/v1/webhook".into(),
                        Some(api_key),
                        json!({"url": callback_url, "events": events, "platforms": platforms,
                               "flavour": flavour}),
                        &["url", "events", "platforms"],
                    )
                }
                Command::Webhook(Webhook::RotateSecret {
                    api_key,
                    overlap_seconds,
                }) => (
                    "/v1/webhook/secret/rotate".into(),
                    Some(api_key),
                    json!({"overlap_seconds": overlap_seconds}),
                    &["webhook_secret", "previous_expire_at"],
                ),
                Command::Channels(Channels::CreateTelegram {
                    bot,
                    bot_token,
                    secret_token,
                    api_base_url,
                }) => (
                    format!("/admin/v1/bots/{bot}/channels"),
                    cli.token.clone(),
                    json!({"platform": "telegram",
                       "credentials": {"bot_token": bot_token, "secret_token": secret_token},
                       "api_base_url": api_base_url}),
                    &["id", "webhook_path"],
                ),
                Command::Channels(Channels::CreateCustom {
                    bot,
                    event_webhook_url,
                    domain_key,
                    token_ttl_seconds,
                    require_signed_registration,
                }) => (
                    format!("/admin/v1/bots/{bot}/channels"),
                    cli.token.clone(),
                    json!({"platform": "custom",
                       "credentials": {"event_webhook_url": event_webhook_url,
                                       "domain_key": domain_key,
                                       "token_ttl_seconds": token_ttl_seconds,
                                       "require_signed_registration": require_signed_registration}}),
                    &["id", "webhook_path", "generated"],
                ),
                Command::Channels(Channels::Profile {
                    api_key,
                    channel,
                    set,
                    remove,
                    file,
                }) => {
                    let mut change = match &file {
                        Some(f) => match json_file(f)? {
                            Value::Object(m) => m,
                            _ => anyhow::bail!("{}: give a JSON object", f.display()),
                        },
                        None => serde_json::Map::new(),
                    };
                    for pair in &set {
                        let (name, value) = name_value(pair)?;
                        change.insert(name.to_owned(), json!(value));
                    }
                    for name in remove {
                        change.insert(name, Value::Null);
                    }
                    method = if change.is_empty() {
                        reqwest::Method::GET
                    } else {
                        reqwest::Method::PATCH
                    };
                    (
                        format!("/v1/channels/{}/profile", query_escape(&channel)),
                        Some(api_key),
                        Value::Object(change),
                        &["channel_id", "platform", "profile"],
                    )
                }
                Command::Channels(Channels::RevokeTokens { api_key, channel }) => (
                    format!("/v1/channels/{channel}/tokens/revoke"),
                    Some(api_key),
                    json!({}),
                    &["tokens_revoked_at"],
                ),
                Command::Channels(Channels::RevokeUserTokens { api_key, user }) => (
                    format!("/v1/users/{user}/tokens/revoke"),
                    Some(api_key),
                    json!({}),
                    &["tokens_revoked_at"],
                ),
                Command::Channels(Channels::CreateMessenger {
                    bot,
                    page_id,
                    page_access_token,
                    app_secret,
                    verify_token,
                    api_base_url,
                }) => (
                    format!("/admin/v1/bots/{bot}/channels"),
                    cli.token.clone(),
                    json!({"platform": "messenger",
                       "credentials": {"page_id": page_id, "page_access_token": page_access_token,
                                       "app_secret": app_secret, "verify_token": verify_token},
                       "api_base_url": api_base_url}),
                    &["id", "webhook_path"],
                ),
                Command::Channels(Channels::CreateWhatsapp {
                    bot,
                    phone_number_id,
                    access_token,
                    app_secret,
                    verify_token,
                    api_base_url,
                }) => (
                    format!("/admin/v1/bots/{bot}/channels"),
                    cli.token.clone(),
                    json!({"platform": "whatsapp",
                       "credentials": {"phone_number_id": phone_number_id, "access_token": access_token,
                                       "app_secret": app_secret, "verify_token": verify_token},
                       "api_base_url": api_base_url}),
                    &["id", "webhook_path"],
                ),
                Command::Channels(Channels::CreateWechat {
                    bot,
                    app_id,
                    app_secret,
                    wechat_token,
                    encoding_aes_key,
                    no_customer_service_api,
                    api_base_url,
                }) => (
                    format!("/admin/v1/bots/{bot}/channels"),
                    cli.token.clone(),
                    json!({"platform": "wechat",
                       "credentials": {"app_id": app_id, "app_secret": app_secret, "token": wechat_token,
                                       "encoding_aes_key": encoding_aes_key,
                                       "customer_service_api": !no_customer_service_api},
                       "api_base_url": api_base_url}),
                    &["id", "webhook_path"],
                ),
                Command::Channels(Channels::List { bot }) => {
                    method = reqwest::Method::GET;
                    (
                        format!("/admin/v1/bots/{bot}/channels"),
                        cli.token.clone(),
                        Value::Null,
                        &[
                            "id",
                            "platform",
                            "enabled",
                            "webhook_path",
                            "setup.state",
                            "setup.detail",
                        ],
                    )
                }
                Command::Channels(Channels::CreateKik {
                    bot,
                    username,
                    api_key,
                    api_base_url,
                }) => (
                    format!("/admin/v1/bots/{bot}/channels"),
                    cli.token.clone(),
                    json!({"platform": "kik",
                       "credentials": {"username": username, "api_key": api_key},
                       "api_base_url": api_base_url}),
                    &["id", "webhook_path"],
                ),
                Command::Channels(Channels::SetEnabled {
                    bot,
                    channel,
                    enabled,
                }) => {
                    method = reqwest::Method::PATCH;
                    (
                        format!("/admin/v1/bots/{bot}/channels/{channel}"),
                        cli.token.clone(),
                        json!({ "enabled": enabled }),
                        &[],
                    )
                }
                Command::Channels(Channels::CreateViber {
                    bot,
                    auth_token,
                    sender_name,
                    sender_avatar,
                    api_base_url,
                }) => {
                    let mut credentials = json!({ "auth_token": auth_token });
                    if let Some(n) = sender_name {
                        credentials["sender_name"] = json!(n);
                    }
                    if let Some(a) = sender_avatar {
                        credentials["sender_avatar"] = json!(a);
                    }
                    (
                        format!("/admin/v1/bots/{bot}/channels"),
                        cli.token.clone(),
                        json!({"platform": "viber", "credentials": credentials,
                               "api_base_url": api_base_url}),
                        &["id", "webhook_path"],
                    )
                }
                Command::Channels(Channels::CreateLine {
                    bot,
                    channel_secret,
                    channel_access_token,
                    api_base_url,
                }) => (
                    format!("/admin/v1/bots/{bot}/channels"),
                    cli.token.clone(),
                    json!({"platform": "line",
                       "credentials": {"channel_secret": channel_secret,
                                       "channel_access_token": channel_access_token},
                       "api_base_url": api_base_url}),
                    &["id", "webhook_path"],
                ),
                Command::Users(Users::Get { api_key, user }) => {
                    method = reqwest::Method::GET;
                    (
                        format!("/v1/users/{}", query_escape(&user)),
                        Some(api_key),
                        Value::Null,
                        &["id", "platform", "platform_user_id", "display_name", "fields"],
                    )
                }
                Command::Users(Users::SetFields {
                    api_key,
                    user,
                    set,
                    remove,
                }) => {
                    method = reqwest::Method::PATCH;
                    let mut fields = serde_json::Map::new();
                    for pair in &set {
                        let (name, value) = name_value(pair)?;
                        fields.insert(name.to_owned(), json!(value));
                    }
                    for name in remove {
                        fields.insert(name, Value::Null);
                    }
                    (
                        format!("/v1/users/{}", query_escape(&user)),
                        Some(api_key),
                        json!({"fields": fields}),
                        &["id", "fields"],
                    )
                }
                Command::Users(Users::Find {
                    api_key,
                    field,
                    limit,
                    after,
                }) => {
                    method = reqwest::Method::GET;
                    let mut query = format!("limit={limit}");
                    for pair in &field {
                        let (name, value) = name_value(pair)?;
                        query.push_str(&format!(
                            "&field.{}={}",
                            query_escape(name),
                            query_escape(value)
                        ));
                    }
                    if let Some(after) = after {
                        query.push_str(&format!("&after={}", query_escape(&after)));
                    }
                    (
                        format!("/v1/users?{query}"),
                        Some(api_key),
                        Value::Null,
                        &["id", "platform", "platform_user_id", "display_name", "fields"],
                    )
                }
                Command::Templates(Templates::Create { api_key, file }) => (
                    "/v1/templates".into(),
                    Some(api_key),
                    json_file(&file)?,
                    &["id", "name", "variables"],
                ),
                Command::Templates(Templates::Replace {
                    api_key,
                    template,
                    file,
                }) => {
                    method = reqwest::Method::PUT;
                    (
                        format!("/v1/templates/{}", query_escape(&template)),
                        Some(api_key),
                        json_file(&file)?,
                        &["id", "name", "variables"],
                    )
                }
                Command::Templates(Templates::List { api_key }) => {
                    method = reqwest::Method::GET;
                    (
                        "/v1/templates".into(),
                        Some(api_key),
                        Value::Null,
                        &["id", "name", "variables", "updated_at"],
                    )
                }
                Command::Templates(Templates::Get { api_key, template }) => {
                    method = reqwest::Method::GET;
                    (
                        format!("/v1/templates/{}", query_escape(&template)),
                        Some(api_key),
                        Value::Null,
                        &["id", "name", "text", "variables"],
                    )
                }
                Command::Handover {
                    api_key,
                    conversation,
                    to,
                    agent,
                } => (
                    format!(
                        "/v1/conversations/{}/handover",
                        query_escape(&conversation)
                    ),
                    Some(api_key),
                    json!({"to": to, "agent": agent}),
                    &["conversation_id", "handled_by", "agent", "since"],
                ),
                Command::Partners(Partners::Create { name }) => (
                    "/admin/v1/partners".into(),
                    cli.token.clone(),
                    json!({"name": name}),
                    &["id", "name", "api_key"],
                ),
                Command::Partners(Partners::List) => {
                    method = reqwest::Method::GET;
                    (
                        "/admin/v1/partners".into(),
                        cli.token.clone(),
                        Value::Null,
                        &["items"],
                    )
                }
                Command::Partners(Partners::CreateApp { partner_key, file }) => (
                    "/v1/partner/apps".into(),
                    Some(partner_key),
                    json_file(&file)?,
                    &["id", "name", "webhook_secret"],
                ),
                Command::Partners(Partners::Apps { partner_key }) => {
                    method = reqwest::Method::GET;
                    (
                        "/v1/partner/apps".into(),
                        Some(partner_key),
                        Value::Null,
                        &["items"],
                    )
                }
                Command::Partners(Partners::ReplaceApp {
                    partner_key,
                    app,
                    file,
                }) => {
                    method = reqwest::Method::PUT;
                    (
                        format!("/v1/partner/apps/{}", query_escape(&app)),
                        Some(partner_key),
                        json_file(&file)?,
                        &["id", "name", "updated_at"],
                    )
                }
                Command::Partners(Partners::DeleteApp { partner_key, app }) => {
                    method = reqwest::Method::DELETE;
                    (
                        format!("/v1/partner/apps/{}", query_escape(&app)),
                        Some(partner_key),
                        Value::Null,
                        &[],
                    )
                }
                Command::Partners(Partners::Installations { partner_key }) => {
                    method = reqwest::Method::GET;
                    (
                        "/v1/partner/installations".into(),
                        Some(partner_key),
                        Value::Null,
                        &["items"],
                    )
                }
                Command::Partners(Partners::Token {
                    partner_key,
                    installation,
                }) => (
                    format!(
                        "/v1/partner/installations/{}/token",
                        query_escape(&installation)
                    ),
                    Some(partner_key),
                    json!({}),
                    &["access_token", "expires_in", "bot_id", "scopes", "channels"],
                ),
                Command::Apps(Apps::List { api_key }) => {
                    method = reqwest::Method::GET;
                    ("/v1/apps".into(), Some(api_key), Value::Null, &["items"])
                }
                Command::Apps(Apps::Get { api_key, app }) => {
                    method = reqwest::Method::GET;
                    (
                        format!("/v1/apps/{}", query_escape(&app)),
                        Some(api_key),
                        Value::Null,
                        &["id", "name", "partner_name", "callback_url", "events", "scopes"],
                    )
                }
                Command::Apps(Apps::Enable {
                    api_key,
                    app,
                    channels,
                }) => {
                    let body = if channels.is_empty() {
                        json!({})
                    } else {
                        json!({ "channels": channels })
                    };
                    (
                        format!("/v1/apps/{}/enable", query_escape(&app)),
                        Some(api_key),
                        body,
                        &["id", "app_id", "bot_id", "channels", "scopes"],
                    )
                }
                Command::Apps(Apps::Disable { api_key, app }) => {
                    method = reqwest::Method::DELETE;
                    (
                        format!("/v1/apps/{}", query_escape(&app)),
                        Some(api_key),
                        Value::Null,
                        &[],
                    )
                }
                Command::Broadcasts(Broadcasts::Create { api_key, file }) => (
                    "/v1/broadcasts".into(),
                    Some(api_key),
                    json_file(&file)?,
                    BROADCAST_COLUMNS,
                ),
                Command::Broadcasts(Broadcasts::List { api_key }) => {
                    method = reqwest::Method::GET;
                    (
                        "/v1/broadcasts?limit=100".into(),
                        Some(api_key),
                        Value::Null,
                        BROADCAST_COLUMNS,
                    )
                }
                Command::Broadcasts(Broadcasts::Get { api_key, broadcast }) => {
                    method = reqwest::Method::GET;
                    (
                        format!("/v1/broadcasts/{}", query_escape(&broadcast)),
                        Some(api_key),
                        Value::Null,
                        BROADCAST_COLUMNS,
                    )
                }
                Command::Broadcasts(Broadcasts::Watch {
                    api_key,
                    broadcast,
                    every_ms,
                }) => {
                    let every = std::time::Duration::from_millis(every_ms.max(100));
                    return watch_broadcast(&http, &base, &api_key, &broadcast, every).await;
                }
                Command::Broadcasts(Broadcasts::Pause { api_key, broadcast }) => (
                    format!("/v1/broadcasts/{}/pause", query_escape(&broadcast)),
                    Some(api_key),
                    Value::Null,
                    BROADCAST_COLUMNS,
                ),
                Command::Broadcasts(Broadcasts::Resume { api_key, broadcast }) => (
                    format!("/v1/broadcasts/{}/resume", query_escape(&broadcast)),
                    Some(api_key),
                    Value::Null,
                    BROADCAST_COLUMNS,
                ),
                Command::Broadcasts(Broadcasts::Cancel { api_key, broadcast }) => (
                    format!("/v1/broadcasts/{}/cancel", query_escape(&broadcast)),
                    Some(api_key),
                    Value::Null,
                    BROADCAST_COLUMNS,
                ),
                Command::Templates(Templates::Delete { api_key, template }) => {
                    method = reqwest::Method::DELETE;
                    (
                        format!("/v1/templates/{}", query_escape(&template)),
                        Some(api_key),
                        Value::Null,
                        &[],
                    )
                }
                Command::Token {
                    api_key,
                    refresh_token,
                } => {
                    let body = match (api_key, refresh_token) {
                        (_, Some(r)) => json!({"refresh_token": r}),
                        (Some(k), None) => json!({"api_key": k}),
                        (None, None) => bail!("give --api-key or --refresh-token"),
                    };
                    (
                        "/v1/auth/token".into(),
                        None,
                        body,
                        &["access_token", "expires_in", "refresh_token", "scopes"],
                    )
                }
                Command::Send {
                    api_key,
                    user,
                    text,
                    template,
                    meta,
                } => {
                    let content = match (text, template) {
                        (Some(text), _) => json!({"type": "text", "text": text}),
                        (None, template) => {
                            let mut values = serde_json::Map::new();
                            for pair in &meta {
                                let (name, value) = name_value(pair)?;
                                values.insert(name.to_owned(), json!(value));
                            }
                            json!({"type": "template", "id": template, "meta": values})
                        }
                    };
                    (
                        "/v1/messages".into(),
                        Some(api_key),
                        json!({"user_id": user, "messages": [content]}),
                        &["id", "message_ids"],
                    )
                }
                Command::All
                | Command::Service { .. }
                | Command::Migrate
                | Command::MasterKey(_)
                | Command::NatsAuth { .. } => {
                    unreachable!("handled in main")
                }
            };
        let mut request = http.request(method.clone(), format!("{base}{path}"));
        // The token exchange carries its credential in the body.
        if path != "/v1/auth/token" {
            let bearer = bearer.context("no token: pass --token or set PATCHBAY_ADMIN_TOKEN")?;
            request = request.bearer_auth(bearer);
        }
        if method != reqwest::Method::GET {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {base}"))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "{status}: {}",
                answer["error"]["message"].as_str().unwrap_or("no details")
            );
        }
        if cli.json {
            println!("{}", serde_json::to_string_pretty(&answer)?);
        } else if let Some(items) = answer["items"]
            .as_array()
            .or_else(|| answer["users"].as_array())
        {
            print!("{}", table(summary, items));
            if let Some(next) = answer["next_cursor"].as_str() {
                println!("more: --after {next}");
            }
        } else {
            for key in summary {
                // `counts.sent`: a field of a nested object.
                let v = answer
                    .pointer(&format!("/{}", key.replace('.', "/")))
                    .unwrap_or(&Value::Null);
                println!(
                    "{key:<16} {}",
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                );
            }
        }
        Ok(())
    })
}

/// `NAME=VALUE` split at the first `=`.
fn name_value(pair: &str) -> anyhow::Result<(&str, &str)> {
    pair.split_once('=')
        .filter(|(name, _)| !name.is_empty())
        .with_context(|| format!("{pair:?}: give NAME=VALUE"))
}

/// `s` percent-encoded for a URL's path segment or query value (everything but unreserved
/// characters, RFC 3986).
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The JSON in `path` (`-`: standard input).
fn json_file(path: &std::path::Path) -> anyhow::Result<Value> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("{} is no JSON", path.display()))
}
