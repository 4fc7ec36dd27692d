//! The template registry end to end (real NATS and PostgreSQL): a bot creates, lists, reads,
//! replaces and deletes named templates with a form per platform; each answer lists the
//! variables the forms use; bad definitions get 422 naming the field, a second template of
//! one name 409, and another bot's templates are not there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use patchbay_tests::Stack;
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
