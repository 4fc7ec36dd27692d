//! The template registry end to end (real NATS and PostgreSQL): a bot creates, lists, reads,
//! replaces and deletes named templates with a form per platform; each answer lists the
//! variables the forms use; bad definitions get 422 naming the field, a second template of
//! one name 409, and another bot's templates are not there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use patchbay_tests::{Stack, TIMEOUT};
use serde_json::{Value, json};

fn reminder() -> Value {
    json!({
        "name": "appointment_reminder",
        "text": "Hi {{contact.name}}, your appointment is at {{PlanTime}}.",
        "whatsapp": {"name": "appointment_reminder", "language": "en_US", "components": [
            {"type": "body", "parameters": [
                {"type": "text", "text": "{{contact.name}}"},
                {"type": "text", "text": "{{PlanTime}}"}]}]},
        "wechat": {"template_id": "TM00015", "url": "https://example.com/appointments",
                   "data": {"first": "Hi {{contact.name}}", "keyword1": "{{PlanTime}}",
                            "remark": "Plate {{contact.fields.licenseplate}}"}}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_are_created_read_replaced_and_deleted_within_the_bot() {
    let stack = Stack::start().await;
    let bot = stack.bot().await;
    let other = stack.bot().await;
    let key = bot.api_key.as_str();

    let (status, created) = stack
        .call("post", "/v1/templates", Some(key), Some(&reminder()))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("tpl_"), "{created}");
    assert_eq!(created["bot_id"], bot.id.as_str());
    assert_eq!(
        created["variables"],
        json!(["PlanTime", "contact.fields.licenseplate", "contact.name"])
    );
    assert_eq!(created["wechat"]["template_id"], "TM00015");
    assert_eq!(created["whatsapp"]["language"], "en_US");

    let (status, read) = stack
        .call("get", &format!("/v1/templates/{id}"), Some(key), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(read, created);
    let (status, second) = stack
        .call(
            "post",
            "/v1/templates",
            Some(key),
            Some(&json!({"name": "welcome", "text": "Welcome!"})),
        )
        .await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(second["variables"], json!([]));
    let (_, list) = stack.call("get", "/v1/templates", Some(key), None).await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["appointment_reminder", "welcome"], "by name");

    // One name per bot; another bot may use it.
    let (status, body) = stack
        .call("post", "/v1/templates", Some(key), Some(&reminder()))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "name_taken");
    let (status, theirs) = stack
        .call(
            "post",
            "/v1/templates",
            Some(&other.api_key),
            Some(&reminder()),
        )
        .await;
    assert_eq!(status, 201, "{theirs}");
    let (_, their_list) = stack
        .call("get", "/v1/templates", Some(&other.api_key), None)
        .await;
    assert_eq!(their_list["items"].as_array().unwrap().len(), 1);
    let (status, _) = stack
        .call(
            "get",
            &format!("/v1/templates/{id}"),
            Some(&other.api_key),
            None,
        )
        .await;
    assert_eq!(status, 404);

    // Replace: the whole definition, variables recomputed; a taken name refused.
    let (status, replaced) = stack
        .call(
            "put",
            &format!("/v1/templates/{id}"),
            Some(key),
            Some(&json!({"name": "appointment_reminder", "text": "See you at {{PlanTime}}"})),
        )
        .await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["variables"], json!(["PlanTime"]));
    assert!(replaced.get("whatsapp").is_none(), "{replaced}");
    assert_eq!(replaced["created_at"], created["created_at"]);
    let (status, body) = stack
        .call(
            "put",
            &format!("/v1/templates/{id}"),
            Some(key),
            Some(&json!({"name": "welcome", "text": "x"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");

    // Bad definitions: 422 naming the field, nothing stored.
    for (bad, field) in [
        (json!({"name": "empty"}), "text"),
        (json!({"name": "x", "text": "Hi {{contact.email}}"}), "text"),
        (json!({"name": "x", "text": "Hi {{PlanTime"}), "text"),
        (
            json!({"name": "x", "wechat": {"template_id": "T", "data": {}}}),
            "wechat.data",
        ),
        (
            json!({"name": "x", "whatsapp": {"name": "x", "language": "en", "components": [
                {"type": "body", "parameters": [{"type": "text", "text": "{{9}}"}]}]}}),
            "whatsapp.components[0].parameters[0].text",
        ),
        (json!({"name": "has space", "text": "x"}), "name"),
    ] {
        let (status, e) = stack
            .call("post", "/v1/templates", Some(key), Some(&bad))
            .await;
        assert_eq!(status, 422, "{bad}: {e}");
        assert_eq!(e["error"]["code"], "invalid_template", "{e}");
        let message = e["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{field}:")), "{message}");
    }
    let (status, e) = stack
        .call(
            "post",
            "/v1/templates",
            Some(key),
            Some(&json!({"name": "x", "text": "hi", "sms": "hi"})),
        )
        .await;
    assert_eq!(status, 422, "unknown fields refused: {e}");
    let (_, list) = stack.call("get", "/v1/templates", Some(key), None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);

    // Delete.
    let (status, _) = stack
        .call("delete", &format!("/v1/templates/{id}"), Some(key), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = stack
        .call("get", &format!("/v1/templates/{id}"), Some(key), None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = stack
        .call("delete", &format!("/v1/templates/{id}"), Some(key), None)
        .await;
    assert_eq!(status, 404);
    stack.shutdown().await;
}

const WA_SECRET: &str = "wa-app-secret";

/// Ana writes on WhatsApp at `timestamp` (seconds); waits for the `n`th `message.received`.
async fn ana_writes(
    stack: &Stack,
    bot: &patchbay_tests::MetaBot,
    wamid: &str,
    timestamp: i64,
    n: usize,
) -> String {
    use patchbay_whatsapp::fixtures as fx;
    let mut message = fx::text(wamid, "hi");
    message["timestamp"] = json!(timestamp.to_string());
    let post = fx::post(&[(fx::PHONE_NUMBER_ID, fx::from_user(message))]);
    let status = stack
        .post_meta("whatsapp", &bot.webhook_path, Some(WA_SECRET), &post)
        .await;
    assert_eq!(status, 200);
    stack.events_of("message.received", n).await[n - 1].json()["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_names_a_template_and_the_router_renders_it_for_the_channel_and_the_user() {
    use patchbay_whatsapp::fixtures::PHONE_NUMBER_ID;
    let stack = Stack::start().await;
    let bot = stack
        .whatsapp_bot(PHONE_NUMBER_ID, WA_SECRET, Some(vec!["message.*"]))
        .await;
    let key = bot.api_key.as_str();
    let stack = &stack;
    // Ana last wrote two days ago: WhatsApp's 24-hour window is closed.
    let two_days_ago = chrono::Utc::now().timestamp() - 2 * 86_400;
    let user = ana_writes(stack, &bot, "wamid.OLD", two_days_ago, 1).await;
    let user = user.as_str();
    let create = |def: Value| async move {
        let (status, t) = stack
            .call("post", "/v1/templates", Some(key), Some(&def))
            .await;
        assert_eq!(status, 201, "{t}");
        t["id"].as_str().unwrap().to_owned()
    };
    let reminder = create(reminder()).await;
    let plate = create(json!({
        "name": "plate_ready",
        "text": "Your car {{contact.fields.licenseplate}} is ready.",
        "whatsapp": {"name": "plate_ready", "language": "en_US", "components": [
            {"type": "body", "parameters": [{"type": "text", "text": "{{contact.fields.licenseplate}}"}]}]}
    }))
    .await;
    let wechat_only = create(json!({
        "name": "wechat_only",
        "wechat": {"template_id": "TM1", "data": {"first": "Hi"}}
    }))
    .await;
    let send = |content: Value| async move {
        stack
            .call(
                "post",
                "/v1/messages",
                Some(key),
                Some(&json!({"user_id": user, "messages": [content]})),
            )
            .await
    };
    let refused = |(status, body): (u16, Value), code: &str| {
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        body["error"]["message"].as_str().unwrap().to_owned()
    };

    // Refused up front, naming what is wrong.
    let m = refused(
        send(json!({"type": "template", "id": "tpl_nosuchtemplate"})).await,
        "unknown_template",
    );
    assert!(m.starts_with("messages[0].id"), "{m}");
    let m = refused(
        send(json!({"type": "template", "id": reminder})).await,
        "missing_variables",
    );
    assert!(m.contains("needs values for PlanTime"), "{m}");
    let m = refused(
        send(json!({"type": "template", "id": plate})).await,
        "missing_variables",
    );
    assert!(m.contains("contact.fields.licenseplate"), "{m}");
    let m = refused(
        send(json!({"type": "template", "id": wechat_only})).await,
        "template_unavailable",
    );
    assert!(m.contains("no form for whatsapp"), "{m}");
    assert!(stack.graph.sends(PHONE_NUMBER_ID).is_empty());

    // Outside the window the WhatsApp form goes, its variables filled for Ana.
    let (status, body) = send(json!({"type": "template", "id": reminder,
                                     "meta": {"PlanTime": "3.15 pm"}}))
    .await;
    assert_eq!(status, 202, "{body}");
    let calls = stack
        .graph
        .wait_for_sends(PHONE_NUMBER_ID, 1, TIMEOUT)
        .await;
    assert_eq!(
        calls[0].body["template"],
        json!({"name": "appointment_reminder", "language": {"code": "en_US"}, "components": [
            {"type": "body", "parameters": [{"type": "text", "text": "Ana"},
                                            {"type": "text", "text": "3.15 pm"}]}]})
    );
    let (status, patched) = stack
        .call(
            "patch",
            &format!("/v1/users/{user}"),
            Some(key),
            Some(&json!({"fields": {"licenseplate": "XX-99-WZ"}})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    let (status, body) = send(json!({"type": "template", "id": plate})).await;
    assert_eq!(status, 202, "{body}");
    let calls = stack
        .graph
        .wait_for_sends(PHONE_NUMBER_ID, 2, TIMEOUT)
        .await;
    assert_eq!(
        calls[1].body["template"]["components"][0]["parameters"][0]["text"],
        "XX-99-WZ"
    );

    // The registry as the fallback: only a template with a WhatsApp form and contact
    // variables only will do.
    let fallback = |id: &str| json!({"fallback_templates": {"whatsapp": {"template_id": id}}});
    let admin = Some(stack.admin_token());
    let path = format!("/admin/v1/bots/{}", bot.id);
    for (id, why) in [
        (reminder.as_str(), "uses PlanTime"),
        (wechat_only.as_str(), "has no whatsapp form"),
        ("tpl_nosuchtemplate", "no template tpl_nosuchtemplate"),
    ] {
        let (status, body) = stack.call("patch", &path, admin, Some(&fallback(id))).await;
        assert_eq!(status, 422, "{body}");
        let m = body["error"]["message"].as_str().unwrap();
        assert!(
            m.starts_with("fallback_templates.whatsapp.template_id") && m.contains(why),
            "{m}"
        );
    }
    let (status, body) = stack
        .call("patch", &path, admin, Some(&fallback(&plate)))
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = send(json!({"type": "text", "text": "Are you still there?"})).await;
    assert_eq!(status, 202, "{body}");
    let calls = stack
        .graph
        .wait_for_sends(PHONE_NUMBER_ID, 3, TIMEOUT)
        .await;
    assert_eq!(calls[2].body["template"]["name"], "plate_ready");
    assert_eq!(
        calls[2].body["template"]["components"][0]["parameters"][0]["text"],
        "XX-99-WZ"
    );

    // Inside the window (Ana wrote now) the text form goes.
    ana_writes(stack, &bot, "wamid.NOW", chrono::Utc::now().timestamp(), 2).await;
    let (status, body) = send(json!({"type": "template", "id": reminder,
                                     "meta": {"PlanTime": "3.15 pm"}}))
    .await;
    assert_eq!(status, 202, "{body}");
    let calls = stack
        .graph
        .wait_for_sends(PHONE_NUMBER_ID, 4, TIMEOUT)
        .await;
    assert_eq!(
        calls[3].body["text"]["body"],
        "Hi Ana, your appointment is at 3.15 pm."
    );

    // A client that publishes its command itself is not checked up front: the router
    // renders, and the message fails naming what is missing.
    let command = json!({"v": 1, "id": "crm-1", "user_id": user,
                         "messages": [{"type": "template", "id": reminder}]});
    async_nats::jetstream::new(stack.raw_nats().await)
        .publish(
            patchbay_contract::Subjects::new(&stack.config.nats_prefix)
                .unwrap()
                .send(&bot.id)
                .unwrap(),
            serde_json::to_vec(&command).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let failed = stack.events_of("message.failed", 1).await[0].json();
    assert_eq!(
        failed["message"]["id"],
        patchbay_contract::ids::message_ids(&bot.id, "crm-1", 1)[0].as_str()
    );
    assert_eq!(failed["error"]["code"], "missing_variables", "{failed}");
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("PlanTime"),
        "{failed}"
    );
    assert_eq!(stack.graph.sends(PHONE_NUMBER_ID).len(), 4);
}
