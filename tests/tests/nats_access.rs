//! NATS is locked down: every service connects as its own user, limited to its role's
//! subjects. The attacks are performed from clients holding another service's credentials (or
//! none): calling an RPC they have no business calling, listening to another service's
//! requests or replies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use patchbay_contract::access::{PLATFORMS, Role};
use patchbay_contract::{Subjects, api_ops, auth_ops, dispatcher_ops, outbound_ops, router_ops};
use patchbay_tests::Stack;
use tokio::sync::mpsc;

/// Every request/reply subject of the installation, with its service and operation.
fn rpc_subjects(s: &Subjects) -> Vec<(String, &'static str, String)> {
    let mut out = Vec::new();
    for (service, ops) in [
        ("auth", auth_ops::ALL),
        ("dispatcher", dispatcher_ops::ALL),
        ("router", router_ops::ALL),
        ("api", api_ops::ALL),
    ] {
        for op in ops {
            out.push((service.to_owned(), *op, s.rpc(service, op)));
        }
    }
    for p in PLATFORMS {
        let service = Role::Outbound(p).name();
        for op in outbound_ops::ALL {
            out.push((service.clone(), *op, s.rpc(&service, op)));
        }
    }
    out
}

/// Who may call what, written out here rather than taken from the generator it checks.
fn may_call(role: Role, service: &str, op: &str) -> bool {
    match role {
        Role::All => true,
        Role::Api => service != "api",
        // The console asks the API, with its people's own credentials, and nothing else.
        Role::Console => service == "api",
        Role::Dispatcher => service == "auth" && op == auth_ops::DISABLE_WEBHOOK,
        Role::Auth => service == "dispatcher" && op == dispatcher_ops::VERIFY_ENDPOINT,
        // Whether an external_id already has a user (a contact the tenant created).
        Role::Ingress(patchbay_contract::Platform::Custom) => {
            service == "router" && op == router_ops::GET_USER
        }
        _ => false,
    }
}

/// A client as `role`, and the errors the server sends it.
async fn client_as(
    stack: &Stack,
    role: Role,
) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
    let subjects = Subjects::new(&stack.config.nats_prefix).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::with_user_and_password(
        role.user(&subjects),
        stack.nats_auth.password_of(role),
    )
    .custom_inbox_prefix(role.inbox_prefix(&subjects))
    .event_callback(move |event| {
        let tx = tx.clone();
        async move {
            if let async_nats::Event::ServerError(e) = event {
                let _ = tx.send(e.to_string());
            }
        }
    })
    .connect(stack.nats.url())
    .await
    .unwrap();
    (client, rx)
}

/// Waits for the server's permissions violation naming `subject`.
async fn refused(errors: &mut mpsc::UnboundedReceiver<String>, what: &str, subject: &str) {
    let expected = format!("permissions violation for {what} to \"{subject}\"");
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = errors.recv().await {
            if e.to_lowercase().contains(&expected.to_lowercase()) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(seen, "the server did not refuse: {expected}");
}

#[tokio::test]
async fn every_rpc_subject_refuses_the_credentials_of_services_that_do_not_call_it() {
    let stack = Stack::start().await;
    let subjects = Subjects::new(&stack.config.nats_prefix).unwrap();
    let rpcs = rpc_subjects(&subjects);
    let mut refusals = 0;
    let mut answers = 0;
    for role in Role::every() {
        let (client, mut errors) = client_as(&stack, role).await;
        for (service, op, subject) in &rpcs {
            if may_call(role, service, op) {
                // Allowed: the service answers (an empty body gets an error reply, which is
                // an answer all the same).
                let reply = tokio::time::timeout(
                    Duration::from_secs(10),
                    client.request(subject.clone(), "{}".into()),
                )
                .await
                .unwrap_or_else(|_| panic!("{role:?} got no answer on {subject}"))
                .unwrap_or_else(|e| panic!("{role:?} on {subject}: {e}"));
                assert!(!reply.payload.is_empty());
                answers += 1;
            } else {
                // The request a stolen sidecar would make: refused by the server, never
                // delivered to the service.
                client
                    .publish_with_reply(
                        subject.clone(),
                        client.new_inbox(),
                        r#"{"v":1,"bot_id":"bot_x"}"#.into(),
                    )
                    .await
                    .unwrap();
                client.flush().await.unwrap();
                refused(&mut errors, "publish", subject).await;
                refusals += 1;
            }
        }
    }
    // The API calls everything, the single process too; the dispatcher, auth and
    // ingress-custom one op each.
    assert_eq!(answers, 2 * rpcs.len() + 3);
    assert_eq!(refusals, Role::every().len() * rpcs.len() - answers);
}

#[tokio::test]
async fn no_service_can_listen_to_another_services_requests_or_replies() {
    let stack = Stack::start().await;
    let s = Subjects::new(&stack.config.nats_prefix).unwrap();
    for role in Role::every() {
        if role == Role::All {
            continue;
        }
        let (client, mut errors) = client_as(&stack, role).await;
        let mut forbidden = vec![
            // Every inbox, and auth's: fresh API keys and secrets travel there.
            "_INBOX.>".to_owned(),
            format!("{}.>", Role::Auth.inbox_prefix(&s)),
            format!("{}.>", Role::Api.inbox_prefix(&s)),
            // Everything at once.
            ">".to_owned(),
        ];
        if role != Role::Auth {
            // Where channel credentials arrive (`create_channel`).
            forbidden.push(s.rpc_all("auth"));
        }
        if role != Role::Router {
            forbidden.push(s.rpc_all("router"));
        }
        forbidden.retain(|f| !f.starts_with(&role.inbox_prefix(&s)));
        for subject in forbidden {
            let _sub = client.subscribe(subject.clone()).await.unwrap();
            client.flush().await.unwrap();
            refused(&mut errors, "subscription", &subject).await;
        }
    }
}

#[tokio::test]
async fn a_client_without_credentials_or_with_a_wrong_password_is_refused() {
    let stack = Stack::start().await;
    let anonymous = async_nats::ConnectOptions::new()
        .connect(stack.nats.url())
        .await;
    assert!(anonymous.is_err(), "an anonymous client connected");
    let s = Subjects::new(&stack.config.nats_prefix).unwrap();
    let wrong = async_nats::ConnectOptions::with_user_and_password(
        Role::Api.user(&s),
        stack.nats_auth.password_of(Role::Normaliser),
    )
    .connect(stack.nats.url())
    .await;
    assert!(
        wrong.is_err(),
        "another role's password opened the api user"
    );
}

#[tokio::test]
async fn secrets_never_cross_nats_in_clear() {
    let stack = Stack::start().await;
    // Everything on the wire, as the operator's user sees it (it may read every subject).
    let wire = stack.raw_nats().await;
    let mut everything = wire.subscribe(">").await.unwrap();
    // A flush only writes the subscription out: a probe that comes back proves the server
    // has it, before anything is created.
    let probe = format!("probe.{}", patchbay_testkit::unique_prefix());
    wire.publish(probe.clone(), "".into()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(m) = futures::StreamExt::next(&mut everything).await {
            if m.subject.as_str() == probe {
                break;
            }
        }
    })
    .await
    .expect("the subscription is in place");
    let bot = stack.bot().await;
    // The bot's creation and its channel's: the replies carry the API key and webhook secret,
    // the channel request carries the Telegram token and secret token.
    let secrets = [
        bot.api_key.as_str(),
        bot.webhook_secret.as_str(),
        bot.bot_token.as_str(),
        bot.secret_token.as_str(),
    ];
    let inbox = Role::All.inbox_prefix(&Subjects::new(&stack.config.nats_prefix).unwrap());
    let mut sealed_requests = std::collections::BTreeSet::new();
    let mut answers = 0;
    // Until both requests to auth and their answers went by (the stack runs `patchbay all`,
    // so answers go to its inbox), and then until the wire has been quiet for half a second;
    // every message on the way is judged.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let complete = sealed_requests.len() >= 2 && answers >= 2;
        let wait = if complete {
            Duration::from_millis(500)
        } else {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        let Ok(Some(msg)) =
            tokio::time::timeout(wait, futures::StreamExt::next(&mut everything)).await
        else {
            break;
        };
        let payload = String::from_utf8_lossy(&msg.payload).into_owned();
        for secret in secrets {
            assert!(
                !payload.contains(secret),
                "a secret in clear on {}: {payload}",
                msg.subject
            );
        }
        if msg.subject.contains(".rpc.auth.") {
            assert!(
                msg.headers
                    .as_ref()
                    .is_some_and(|h| h.get(patchbay_contract::headers::SEALED).is_some()),
                "a request to auth not sealed: {}",
                msg.subject
            );
            sealed_requests.insert(msg.subject.to_string());
        }
        if msg.subject.starts_with(&inbox) {
            answers += 1;
        }
    }
    // The test saw the traffic it judges: both requests and their answers.
    assert_eq!(
        sealed_requests.len(),
        2,
        "requests to auth seen: {sealed_requests:?}"
    );
    assert!(answers >= 2, "{answers} answers seen");
}
