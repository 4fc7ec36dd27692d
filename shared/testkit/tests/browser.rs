//! The browser harness drives Debian's headless Chromium through a form, end to end.

#![allow(clippy::unwrap_used, clippy::expect_used)] // the helpers outside #[test] too.

use std::time::{Duration, Instant};

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use patchbay_testkit::browser::{Browser, BrowserError, Cookie};

const FORM: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Patchbay form</title></head>
<body>
<form method="post" action="/submit">
  <label for="name">Your name</label>
  <input id="name" name="name" type="text" value="to be replaced">
  <label for="colour">Colour</label>
  <select id="colour" name="colour">
    <option value="red">Red</option>
    <option value="green" selected>Green</option>
    <option value="blue &quot;deep&quot;">Blue</option>
  </select>
  <button id="send" type="submit">Send</button>
</form>
</body></html>"#;

/// Decodes `application/x-www-form-urlencoded` (axum here has no `form` feature).
fn form_decode(body: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    };
    body.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn submit(body: String) -> impl IntoResponse {
    let echo: Vec<String> = form_decode(&body)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let page = format!(
        "<!doctype html><html><head><title>Sent</title></head><body>\
         <p id=\"echo\">{}</p></body></html>",
        html_escape(&echo.join("; "))
    );
    (
        [(
            header::SET_COOKIE,
            "pb_session=s3cr3t; Path=/; HttpOnly; SameSite=Strict",
        )],
        Html(page),
    )
}

async fn serve() -> String {
    let app = Router::new()
        .route("/", get(|| async { Html(FORM) }))
        .route("/submit", axum::routing::post(submit));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn fills_a_form_submits_it_and_reads_the_answer_and_its_cookie() {
    let started = Instant::now();
    let base = serve().await;
    let browser = Browser::start().await.expect("chromedriver starts");
    let page = browser.page().await.expect("a session starts");

    page.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(page.title().await.unwrap(), "Patchbay form");
    assert_eq!(page.text("label[for=name]").await.unwrap(), "Your name");
    assert_eq!(page.find_all("#colour option").await.unwrap().len(), 3);
    assert!(page.cookies().await.unwrap().is_empty());

    page.fill("#name", "Ada & <Grace>").await.unwrap();
    let input = page.find("#name").await.unwrap();
    assert_eq!(
        input.property("value").await.unwrap(),
        serde_json::json!("Ada & <Grace>")
    );
    assert_eq!(input.attr("type").await.unwrap().as_deref(), Some("text"));
    assert_eq!(input.attr("data-missing").await.unwrap(), None);
    page.select("#colour", "blue \"deep\"").await.unwrap();
    let picked = page
        .execute(
            "return arguments[0].value",
            vec![page.find("#colour").await.unwrap().as_arg()],
        )
        .await
        .unwrap();
    assert_eq!(picked, serde_json::json!("blue \"deep\""));

    page.click("#send").await.unwrap();
    let echo = page
        .wait_for_text("#echo", "colour=", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        echo.text().await.unwrap(),
        "name=Ada & <Grace>; colour=blue \"deep\""
    );
    assert_eq!(page.url().await.unwrap(), format!("{base}/submit"));
    assert!(page.source().await.unwrap().contains("id=\"echo\""));

    let cookie = page
        .cookie("pb_session")
        .await
        .unwrap()
        .expect("the answer set a cookie");
    assert_eq!(cookie.value, "s3cr3t");
    assert!(cookie.http_only, "{cookie:?}");
    assert!(!cookie.secure, "{cookie:?}");
    assert_eq!(cookie.same_site.as_deref(), Some("Strict"));
    // HttpOnly: the page's scripts cannot see it.
    assert_eq!(
        page.execute("return document.cookie", vec![])
            .await
            .unwrap(),
        serde_json::json!("")
    );

    let png = page.screenshot_png().await.unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{:?}", &png[..8]);
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("shot.png");
    page.save_screenshot(&shot).await.unwrap();
    assert!(std::fs::read(&shot).unwrap().starts_with(b"\x89PNG"));

    // Another page is another session: no cookies of the first.
    let other = browser.page().await.unwrap();
    other.goto(&format!("{base}/")).await.unwrap();
    assert!(other.cookies().await.unwrap().is_empty());
    other
        .add_cookie(&Cookie::new("theme", "dark"))
        .await
        .unwrap();
    assert_eq!(
        other
            .execute("return document.cookie", vec![])
            .await
            .unwrap(),
        serde_json::json!("theme=dark")
    );
    other.close().await.unwrap();

    page.delete_cookies().await.unwrap();
    assert!(page.cookies().await.unwrap().is_empty());
    page.back().await.unwrap();
    page.wait_for("#send", Duration::from_secs(10))
        .await
        .unwrap();
    page.refresh().await.unwrap();
    assert_eq!(page.title().await.unwrap(), "Patchbay form");

    // Failures say what was looked for.
    let err = page.find("#nowhere").await.unwrap_err();
    assert_eq!(err.webdriver_error(), Some("no such element"), "{err}");
    let err = page
        .wait_for("#nowhere", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BrowserError::Timeout { .. }) && err.to_string().contains("#nowhere"),
        "{err}"
    );
    let err = page
        .wait_for_text("title", "never", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("never"), "{err}");

    eprintln!("browser test body took {:?}", started.elapsed());
}
