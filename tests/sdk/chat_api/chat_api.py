"""chat-api's successor SDK (1msg's one-msg-sdk), unchanged, against Patchbay's chat-api
compatibility, driven by tests/tests/chat_api.rs. Prints one JSON object per call:
{"call": <method>, "answer": <the SDK's parsed answer>} or {"call": ..., "error": ...}.

Environment: HOST (the instance URL, $PATCHBAY_URL/chat-api/instance<channel id>), TOKEN,
PHONE (the user's number, digits), HOOK (the webhook URL to set).

The SDK declares sendMessage's fields as form fields but picks JSON as the content type by
default, which sends an empty body; its callers pass the form content type, as here.
"""
import json
import os

from one_msg_sdk import ApiClient, Configuration
from one_msg_sdk.api.messaging_api import MessagingApi
from one_msg_sdk.api.profile_api import ProfileApi
from one_msg_sdk.api.templates_api import TemplatesApi
from one_msg_sdk.api.webhooks_api import WebhooksApi
from one_msg_sdk.exceptions import ApiException
from one_msg_sdk.models.get_webhook200_response import GetWebhook200Response
from one_msg_sdk.models.send_template_request import SendTemplateRequest

HOST, TOKEN, PHONE, HOOK = (os.environ[k] for k in ("HOST", "TOKEN", "PHONE", "HOOK"))
FORM = "application/x-www-form-urlencoded"


def call(name, f):
    try:
        answer = f()
        answer = answer.to_dict() if hasattr(answer, "to_dict") else answer
        print(json.dumps({"call": name, "answer": answer}), flush=True)
    except ApiException as e:
        print(json.dumps({"call": name, "error": e.status, "body": e.body}), flush=True)


with ApiClient(Configuration(host=HOST)) as api:
    webhooks, messaging = WebhooksApi(api), MessagingApi(api)
    call("setWebhook", lambda: webhooks.set_webhook(
        TOKEN, GetWebhook200Response.from_dict({"webhookUrl": HOOK})))
    call("getWebhook", lambda: webhooks.get_webhook(TOKEN))
    call("sendMessage", lambda: messaging.send_message(
        TOKEN, body="Hello from the SDK", phone=int(PHONE), _content_type=FORM))
    call("sendTemplate", lambda: TemplatesApi(api).send_template(
        TOKEN, SendTemplateRequest.from_dict({
            "template": "template_name", "namespace": "namespace_of_template",
            "language": {"code": "en", "policy": "deterministic"}, "phone": PHONE})))
    call("getMe", lambda: ProfileApi(api).get_me(TOKEN))
    call("listMessages", lambda: messaging.list_messages(TOKEN))
    call("wrongToken", lambda: messaging.send_message(
        "not-a-token", body="x", phone=int(PHONE), _content_type=FORM))
