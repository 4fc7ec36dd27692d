//! Contact fields end to end (real NATS and PostgreSQL, the fake Telegram and tenant): set and
//! removed through `PATCH /v1/users/{id}` and by field messages, shown in the profile and in
//! the user object of later events, searched with `GET /v1/users?field.<name>=…`, within the
//! bot only, with clear 422s at the limits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use patchbay_telegram::fixtures;
use patchbay_tests::{Stack, TIMEOUT, TestBot, eventually};
use serde_json::{Value, json};

/// Telegram user `tg_user` writes `text` to `bot`; answers the `message.received` event the
/// tenant got for it.
async fn writes(stack: &Stack, bot: &TestBot, update_id: i64, tg_user: i64, text: &str) -> Value {
    assert_eq!(
        stack
            .post_update(bot, &fixtures::text_update(update_id, tg_user, text))
            .await,
        200
    );
    eventually(TIMEOUT, "the user's message reaches the tenant", || async {
        stack
            .tenant
            .received()
            .into_iter()
            .map(|r| r.json())
            .find(|e| {
                e["type"] == "message.received"
                    && e["bot_id"] == bot.id
                    && e["message"]["content"]["text"] == text
            })
    })
    .await
}

fn user_id(event: &Value) -> String {
    event["user"]["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_are_set_removed_and_searched_within_the_bot_only() {
    let stack = Stack::start().await;
    let bot = stack.bot().await;
    let other = stack.bot().await;
    let ana = user_id(&writes(&stack, &bot, 1, 4001, "hi from ana").await);
    let ben = user_id(&writes(&stack, &bot, 2, 4002, "hi from ben").await);
    let cy = user_id(&writes(&stack, &bot, 3, 4003, "hi from cy").await);
    let stranger = user_id(&writes(&stack, &other, 4, 4004, "hi from the other bot").await);
    let key = bot.api_key.as_str();

    // Set, read back.
    let (status, profile) = stack
        .call(
            "patch",
            &format!("/v1/users/{ana}"),
            Some(key),
            Some(&json!({"fields": {"licenseplate": "XX-99-WZ", "crm_id": "c-17", "old": null}})),
        )
        .await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["id"], ana.as_str());
    assert_eq!(
        profile["fields"],
        json!({"licenseplate": "XX-99-WZ", "crm_id": "c-17"})
    );
    let (status, read) = stack
        .call("get", &format!("/v1/users/{ana}"), Some(key), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(read, profile);
    // A user without fields shows none.
    let (_, plain) = stack
        .call("get", &format!("/v1/users/{ben}"), Some(key), None)
        .await;
    assert!(plain.get("fields").is_none(), "{plain}");

    // Null removes one; the others stay.
    let (status, profile) = stack
        .call(
            "patch",
            &format!("/v1/users/{ana}"),
            Some(key),
            Some(&json!({"fields": {"crm_id": null}})),
        )
        .await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["fields"], json!({"licenseplate": "XX-99-WZ"}));

    // Search: every given value must hold; pages by id.
    for u in [&ben, &cy] {
        let (status, body) = stack
            .call(
                "patch",
                &format!("/v1/users/{u}"),
                Some(key),
                Some(&json!({"fields": {"licenseplate": "XX-99-WZ", "colour": "red"}})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, page) = stack
        .call(
            "get",
            "/v1/users?field.licenseplate=XX-99-WZ&limit=2",
            Some(key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let mut all: Vec<String> = page["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(all.len(), 2, "{page}");
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let (status, rest) = stack
        .call(
            "get",
            &format!("/v1/users?field.licenseplate=XX-99-WZ&limit=2&after={cursor}"),
            Some(key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{rest}");
    assert!(rest.get("next_cursor").is_none(), "{rest}");
    all.extend(
        rest["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_str().unwrap().to_owned()),
    );
    let mut expected = vec![ana.clone(), ben.clone(), cy.clone()];
    expected.sort();
    assert_eq!(all, expected, "every match once, by id");
    let (_, both) = stack
        .call(
            "get",
            "/v1/users?field.licenseplate=XX-99-WZ&field.colour=red",
            Some(key),
            None,
        )
        .await;
    let mut ids: Vec<&str> = both["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut want = vec![ben.as_str(), cy.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want, "ana has no colour: {both}");
    assert_eq!(both["users"][0]["fields"]["colour"], "red");

    // Another bot: its own user with the same field, and nothing of this bot's.
    let (status, _) = stack
        .call(
            "patch",
            &format!("/v1/users/{stranger}"),
            Some(&other.api_key),
            Some(&json!({"fields": {"licenseplate": "XX-99-WZ"}})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, theirs) = stack
        .call(
            "get",
            "/v1/users?field.licenseplate=XX-99-WZ",
            Some(&other.api_key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{theirs}");
    assert_eq!(theirs["users"].as_array().unwrap().len(), 1, "{theirs}");
    assert_eq!(theirs["users"][0]["id"], stranger.as_str());
    let (status, body) = stack
        .call(
            "patch",
            &format!("/v1/users/{ana}"),
            Some(&other.api_key),
            Some(&json!({"fields": {"licenseplate": "stolen"}})),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "user_not_found");
    let (_, unchanged) = stack
        .call("get", &format!("/v1/users/{ana}"), Some(key), None)
        .await;
    assert_eq!(unchanged["fields"]["licenseplate"], "XX-99-WZ");

    // Limits: a clear 422 naming the field, and nothing changed.
    let too_long = "x".repeat(1025);
    for (body, field) in [
        (json!({"fields": {"no good": "v"}}), "fields.no good"),
        (json!({"fields": {"9lives": "v"}}), "fields.9lives"),
        (json!({"fields": {"note": too_long}}), "fields.note"),
        (json!({"fields": {}}), "fields"),
    ] {
        let (status, e) = stack
            .call("patch", &format!("/v1/users/{ana}"), Some(key), Some(&body))
            .await;
        assert_eq!(status, 422, "{body}: {e}");
        assert_eq!(e["error"]["code"], "invalid_field", "{e}");
        let message = e["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{message}");
    }
    let many: serde_json::Map<String, Value> =
        (0..64).map(|i| (format!("f{i}"), json!("v"))).collect();
    let (status, e) = stack
        .call(
            "patch",
            &format!("/v1/users/{ana}"),
            Some(key),
            Some(&json!({"fields": many})),
        )
        .await;
    assert_eq!(status, 422, "licenseplate plus 64 is 65: {e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 64"),
        "{e}"
    );
    let (_, after) = stack
        .call("get", &format!("/v1/users/{ana}"), Some(key), None)
        .await;
    assert_eq!(after["fields"], json!({"licenseplate": "XX-99-WZ"}));
    let (status, e) = stack
        .call(
            "get",
            "/v1/users?field.licenseplate=a&platform=telegram",
            Some(key),
            None,
        )
        .await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["error"]["code"], "invalid_query");
    let (status, _) = stack
        .call(
            "patch",
            "/v1/users/usr_nobody",
            Some(key),
            Some(&json!({"fields": {"a": "b"}})),
        )
        .await;
    assert_eq!(status, 404);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_message_sets_the_field_sends_nothing_and_later_events_carry_it() {
    let stack = Stack::start().await;
    let bot = stack.bot().await;
    let first = writes(&stack, &bot, 1, 5001, "my car is new").await;
    assert!(first["user"].get("fields").is_none(), "{first}");
    let ana = user_id(&first);
    let conversation = first["conversation_id"].as_str().unwrap().to_owned();
    let key = bot.api_key.as_str();

    // Web1on1's form, then a text: the field is set, only the text reaches Telegram.
    let (status, accepted) = stack
        .post(
            &format!("{}/v1/messages", stack.api_url()),
            key,
            &json!({"user_id": ana, "messages": [
                {"type": "field", "text": ".licenseplate XX-99-WZ"},
                {"type": "text", "text": "noted your plate"},
            ]}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    eventually(TIMEOUT, "the text reaches Telegram", || async {
        stack
            .telegram
            .calls_of("sendMessage")
            .into_iter()
            .find(|c| c.body["text"] == "noted your plate")
    })
    .await;
    let (_, profile) = stack
        .call("get", &format!("/v1/users/{ana}"), Some(key), None)
        .await;
    assert_eq!(
        profile["fields"],
        json!({"licenseplate": "XX-99-WZ"}),
        "{profile}"
    );
    let to_telegram: Vec<String> = stack
        .telegram
        .calls()
        .into_iter()
        .filter(|c| c.body["chat_id"] == 5001)
        .map(|c| c.body.to_string())
        .collect();
    assert_eq!(to_telegram.len(), 1, "only the text: {to_telegram:?}");

    // History keeps the field message, applied.
    let field_id = accepted["message_ids"][0].as_str().unwrap();
    let (status, history) = stack
        .call(
            "get",
            &format!("/v1/conversations/{conversation}/messages"),
            Some(key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{history}");
    let stored = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == field_id)
        .unwrap_or_else(|| panic!("the field message in {history}"));
    assert_eq!(stored["status"], "applied");
    assert_eq!(stored["content"]["type"], "field");

    // The user's next message carries the field to the tenant.
    let next = writes(&stack, &bot, 2, 5001, "when is my appointment").await;
    assert_eq!(
        next["user"]["fields"],
        json!({"licenseplate": "XX-99-WZ"}),
        "{next}"
    );

    // The structured form: a value sets, null removes.
    let (status, body) = stack
        .post(
            &format!("{}/v1/messages", stack.api_url()),
            key,
            &json!({"user_id": ana, "messages": [
                {"type": "field", "field": "location", "value": "Utrecht"},
                {"type": "field", "field": "licenseplate", "value": null},
            ]}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    eventually(TIMEOUT, "both fields change", || async {
        let (_, p) = stack
            .call("get", &format!("/v1/users/{ana}"), Some(key), None)
            .await;
        (p["fields"] == json!({"location": "Utrecht"})).then_some(())
    })
    .await;

    // A field message that breaks the rules is refused before anything is stored.
    for (bad, field) in [
        (json!({"type": "field", "text": "licenseplate XX"}), "text"),
        (
            json!({"type": "field", "field": "no good", "value": "x"}),
            "field",
        ),
        (
            json!({"type": "field", "text": ".a b", "field": "a", "value": "b"}),
            "field",
        ),
    ] {
        let (status, e) = stack
            .post(
                &format!("{}/v1/messages", stack.api_url()),
                key,
                &json!({"user_id": ana, "messages": [bad]}),
            )
            .await;
        assert_eq!(status, 422, "{e}");
        let message = e["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("messages[0].{field}")),
            "{message}"
        );
    }
    stack.shutdown().await;
}
