//! API key scopes: what a bot's key may do. A key carries a list of scopes (`messages:send`,
//! `users:read`, …, an area's wildcard `deliveries:*`, or `*` for all); a key without a list
//! (every key issued before scopes existed, and any key rotated without one) may do everything.
//! Each `/v1` route needs one scope (`services/api/src/scopes.rs`); a key without it gets 403
//! `missing_scope` naming it.

/// Every scope, with what it allows.
pub const SCOPES: &[(&str, &str)] = &[
    (
        "messages:send",
        "send messages (POST /v1/messages, POST /v1/conversations)",
    ),
    ("messages:read", "read a conversation's messages"),
    (
        "users:read",
        "read users' profiles, find users, claim one-time codes",
    ),
    (
        "users:write",
        "change users' contact fields, revoke a custom channel user's tokens",
    ),
    ("templates:read", "read the template registry"),
    ("templates:write", "create, change and delete templates"),
    ("broadcasts:read", "read broadcasts, their state and counts"),
    (
        "broadcasts:write",
        "start, pause, resume and cancel broadcasts",
    ),
    ("media:read", "download the files users sent"),
    ("media:write", "upload files to send"),
    ("deliveries:read", "read the delivery log"),
    ("deliveries:write", "retry and replay deliveries"),
    (
        "settings:read",
        "read the callback settings and the bot's channels",
    ),
    (
        "settings:write",
        "change the callback settings, rotate the signing secret, revoke a custom channel's tokens",
    ),
    ("settings:keys", "rotate and revoke the bot's API keys"),
];

/// What a human agent's invite may do: read conversations, users and templates, take a
/// conversation over, and send (always as the agent, `source: human`).
pub const AGENT: &[&str] = &[
    "messages:read",
    "messages:send",
    "users:read",
    "templates:read",
];

/// Whether `scope` is one of [`SCOPES`].
pub fn is_known(scope: &str) -> bool {
    SCOPES.iter().any(|(s, _)| *s == scope)
}

/// Whether one granted entry (`*`, `area:*` or a scope) covers `scope`.
fn entry_covers(entry: &str, scope: &str) -> bool {
    entry == "*"
        || entry == scope
        || entry
            .strip_suffix(":*")
            .is_some_and(|area| scope.split_once(':').is_some_and(|(a, _)| a == area))
}

/// Whether a key with `granted` scopes (`None`: every scope) may do what `needed` allows.
pub fn grants(granted: Option<&[String]>, needed: &str) -> bool {
    granted.is_none_or(|g| g.iter().any(|e| entry_covers(e, needed)))
}

/// The scopes `entries` stand for, wildcards expanded.
pub fn expand(entries: &[String]) -> Vec<&'static str> {
    SCOPES
        .iter()
        .map(|(s, _)| *s)
        .filter(|s| entries.iter().any(|e| entry_covers(e, s)))
        .collect()
}

/// What a key with `granted` (`None`: every scope) may do, each scope by name: what answers
/// show.
pub fn granted(granted: Option<&[String]>) -> Vec<String> {
    match granted {
        Some(g) => expand(g),
        None => SCOPES.iter().map(|(s, _)| *s).collect(),
    }
    .into_iter()
    .map(str::to_owned)
    .collect()
}

/// Checks a requested list: at least one entry, each `*`, a known area's `area:*` or a known
/// scope. The error says which entry is wrong and what exists.
pub fn check(requested: &[String]) -> Result<(), String> {
    if requested.is_empty() {
        return Err("give at least one scope (\"*\" for all)".to_owned());
    }
    for e in requested {
        let ok = e == "*"
            || is_known(e)
            || e.strip_suffix(":*").is_some_and(|area| {
                SCOPES
                    .iter()
                    .any(|(s, _)| s.split_once(':').is_some_and(|(a, _)| a == area))
            });
        if !ok {
            let known: Vec<&str> = SCOPES.iter().map(|(s, _)| *s).collect();
            return Err(format!(
                "unknown scope {e:?}; scopes are {}, an area's wildcard such as \
                 deliveries:*, or *",
                known.join(", ")
            ));
        }
    }
    Ok(())
}

/// The scopes of `requested` that a key with `granted` does not hold (a key may give a new key
/// only what it holds itself).
pub fn not_held(requested: &[String], granted: Option<&[String]>) -> Vec<&'static str> {
    expand(requested)
        .into_iter()
        .filter(|s| !grants(granted, s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn wildcards_cover_their_area_and_star_covers_everything() {
        let g = v(&["deliveries:*", "users:read"]);
        assert!(grants(Some(&g), "deliveries:read"));
        assert!(grants(Some(&g), "deliveries:write"));
        assert!(grants(Some(&g), "users:read"));
        assert!(!grants(Some(&g), "users:write"));
        assert!(!grants(Some(&g), "settings:keys"));
        assert!(grants(Some(&v(&["*"])), "settings:keys"));
        assert!(grants(None, "settings:keys"), "no list: every scope");
        assert!(!grants(Some(&[]), "users:read"));
    }

    #[test]
    fn requests_name_known_scopes_or_areas() {
        assert!(check(&v(&["messages:send", "settings:*", "*"])).is_ok());
        assert!(check(&[]).is_err());
        let e = check(&v(&["messages:delete"])).unwrap_err();
        assert!(
            e.contains("\"messages:delete\"") && e.contains("messages:send"),
            "{e}"
        );
        assert!(check(&v(&["billing:*"])).is_err());
        assert!(check(&v(&["messages"])).is_err());
    }

    #[test]
    fn a_key_gives_only_what_it_holds() {
        let mine = v(&["settings:keys", "messages:*"]);
        assert!(not_held(&v(&["messages:send"]), Some(&mine)).is_empty());
        assert_eq!(
            not_held(&v(&["messages:send", "users:read"]), Some(&mine)),
            ["users:read"]
        );
        let everything = not_held(&v(&["*"]), Some(&mine));
        assert!(everything.contains(&"deliveries:read") && !everything.contains(&"messages:read"));
        assert!(not_held(&v(&["*"]), None).is_empty());
    }
}
