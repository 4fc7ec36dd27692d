//! A headless Chromium for end-to-end tests of the web console, driven through WebDriver.
//!
//! [`Browser::start`] runs Debian's `chromedriver` (package `chromium-driver`) on a free port;
//! every [`Browser::page`] is a new WebDriver (W3C) session of Debian's `chromium` in headless
//! mode with a fresh profile, so pages share no cookies. WebDriver because it is the browser's
//! own, stable HTTP + JSON protocol: the tests need no downloaded browser build and no driver
//! crate, only the OS packages (`make tools`, or `apt-get install chromium chromium-driver`).
//!
//! The binaries are found through `PATCHBAY_CHROMEDRIVER` (else `/usr/bin/chromedriver`, else
//! `chromedriver` on `PATH`) and `PATCHBAY_CHROMIUM` (else `/usr/bin/chromium`, else `chromium`
//! on `PATH`).
//!
//! chromedriver and the browsers it starts run in a process group of their own, killed when
//! the last handle ([`Browser`] or [`Page`]) drops; a page's session is deleted when it drops
//! (or by [`Page::close`]). If the test process is killed outright, chromedriver dies with it
//! (parent-death signal) but a browser it started may outlive it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), patchbay_testkit::browser::BrowserError> {
//! use std::time::Duration;
//! let browser = patchbay_testkit::browser::Browser::start().await?;
//! let page = browser.page().await?;
//! page.goto("http://127.0.0.1:8080/login").await?;
//! page.fill("#email", "ops@example.com").await?;
//! page.click("button[type=submit]").await?;
//! page.wait_for_text("h1", "Dashboard", Duration::from_secs(10)).await?;
//! # Ok(()) }
//! ```

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::process::{Guarded, spawn};

/// The key of an element reference in WebDriver's JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long chromedriver has to answer `/status` as ready.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest one WebDriver command may take (a page load is capped at 30 s by the session).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How often [`Page::wait_for`] and [`Page::wait_for_text`] look again.
const POLL: Duration = Duration::from_millis(50);
/// How long [`Page::click`] and [`Page::fill`] look again for an element not there yet or
/// replaced under them.
const STALE_RETRY: Duration = Duration::from_secs(5);
/// Chromium's switches for every page (its profile directory is added per page).
const CHROMIUM_ARGS: [&str; 10] = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
];
const INSTALL_HINT: &str = "apt-get install chromium chromium-driver";

/// What went wrong driving the browser. Its `Debug` is its message, so a test's `unwrap` says
/// what went wrong in words (with the install hint when a binary is missing).
#[derive(thiserror::Error)]
pub enum BrowserError {
    /// A binary was not found.
    #[error(
        "{what} not found (looked at {looked}): install Debian's packages with \
         `{INSTALL_HINT}` (or run `make tools`), or set {var}"
    )]
    Missing {
        /// `chromedriver` or `chromium`.
        what: &'static str,
        /// The environment variable that names it.
        var: &'static str,
        /// Where it was looked for.
        looked: String,
    },
    /// chromedriver did not start or did not become ready.
    #[error("chromedriver did not start: {0}")]
    Start(String),
    /// WebDriver answered a command with an error.
    #[error("WebDriver {command}: {error}: {message}")]
    WebDriver {
        /// The command, as `find "#email"` or `POST /session/…/url`.
        command: String,
        /// The HTTP status.
        status: u16,
        /// WebDriver's error code, such as `no such element` or `stale element reference`.
        error: String,
        /// The driver's message.
        message: String,
    },
    /// A condition did not hold in time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was waited for, with the selector.
        what: String,
        /// How long.
        timeout: Duration,
    },
    /// The HTTP exchange with chromedriver failed.
    #[error("WebDriver {command}: HTTP: {source}")]
    Http {
        /// The command.
        command: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// chromedriver answered something that is not WebDriver's JSON.
    #[error("WebDriver {command}: unexpected answer: {detail}")]
    Protocol {
        /// The command.
        command: String,
        /// What was wrong with the answer.
        detail: String,
    },
    /// I/O (temporary directories, log files, screenshots).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl std::fmt::Debug for BrowserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl BrowserError {
    /// WebDriver's error code (`no such element`, `stale element reference`, …), if this is a
    /// WebDriver error.
    pub fn webdriver_error(&self) -> Option<&str> {
        match self {
            Self::WebDriver { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Whether a wait should look again after this error: the element went away or is not
    /// there yet (the page is changing under the wait).
    fn is_transient(&self) -> bool {
        match self {
            // A node of a document being replaced: Chromium's own words for a stale element
            // while a navigation completes.
            BrowserError::WebDriver { error, message, .. } => {
                matches!(
                    error.as_str(),
                    "no such element" | "stale element reference"
                ) || message.contains("does not belong to the document")
            }
            _ => false,
        }
    }
}

/// `$var` (which must exist when set), else `default`, else `what` on `PATH`.
fn locate(what: &'static str, var: &'static str, default: &str) -> Result<PathBuf, BrowserError> {
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(BrowserError::Missing {
                what,
                var,
                looked: format!("{var}={}", p.display()),
            })
        };
    }
    let default = PathBuf::from(default);
    if default.is_file() {
        return Ok(default);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(what))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| BrowserError::Missing {
            what,
            var,
            looked: format!("${var}, {} and PATH", default.display()),
        })
}

/// Where chromedriver is: `PATCHBAY_CHROMEDRIVER`, else `/usr/bin/chromedriver`, else `PATH`.
pub fn chromedriver_binary() -> Result<PathBuf, BrowserError> {
    locate(
        "chromedriver",
        "PATCHBAY_CHROMEDRIVER",
        "/usr/bin/chromedriver",
    )
}

/// Where Chromium is: `PATCHBAY_CHROMIUM`, else `/usr/bin/chromium`, else `PATH`.
pub fn chromium_binary() -> Result<PathBuf, BrowserError> {
    locate("chromium", "PATCHBAY_CHROMIUM", "/usr/bin/chromium")
}

/// Whether both chromedriver and Chromium are installed.
pub fn available() -> bool {
    chromedriver_binary().is_ok() && chromium_binary().is_ok()
}

/// A running chromedriver: shared by the [`Browser`] and its pages, so it outlives them all.
#[derive(Debug)]
struct Driver {
    child: Guarded,
    port: u16,
    base: String,
    http: reqwest::Client,
    chromium: PathBuf,
    dir: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The browsers chromedriver started survive its death: kill its whole process group
        // (chromedriver leads it, and is not reaped yet, so the id cannot have been reused).
        if let Ok(pid) = i32::try_from(self.child.0.id()) {
            // SAFETY: kill(2) on the process group our own unreaped child leads.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        // `child` then kills and reaps chromedriver itself.
    }
}

impl Driver {
    /// Sends a command; WebDriver's `value`, or its error.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        command: &str,
    ) -> Result<Value, BrowserError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let http = |source| BrowserError::Http {
            command: command.to_owned(),
            source,
        };
        let resp = req.send().await.map_err(http)?;
        let status = resp.status();
        let text = resp.text().await.map_err(http)?;
        let mut doc: Value = serde_json::from_str(&text).map_err(|e| BrowserError::Protocol {
            command: command.to_owned(),
            detail: format!("HTTP {status}, not JSON ({e}): {}", truncate(&text, 500)),
        })?;
        let value =
            doc.get_mut("value")
                .map(Value::take)
                .ok_or_else(|| BrowserError::Protocol {
                    command: command.to_owned(),
                    detail: format!("HTTP {status}, no `value`: {}", truncate(&text, 500)),
                })?;
        if !status.is_success()
            && let Some(error) = value.get("error").and_then(Value::as_str)
        {
            return Err(BrowserError::WebDriver {
                command: command.to_owned(),
                status: status.as_u16(),
                error: error.to_owned(),
                message: value
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            });
        }
        if !status.is_success() {
            return Err(BrowserError::Protocol {
                command: command.to_owned(),
                detail: format!("HTTP {status}: {}", truncate(&text, 500)),
            });
        }
        Ok(value)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default()
    }

    /// Deletes a session with a blocking request (for `Drop`, which cannot await): plain
    /// HTTP/1.1 over a std socket, so it works inside any runtime, or none.
    fn delete_session_blocking(&self, session: &str) {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return;
        };
        let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
        let _ = s.set_read_timeout(Some(Duration::from_secs(15)));
        let req = format!(
            "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
             Connection: close\r\nContent-Length: 0\r\n\r\n",
            self.port
        );
        if s.write_all(req.as_bytes()).is_err() {
            return;
        }
        // The answer comes once the browser has quit. chromedriver keeps the connection open
        // whatever `Connection: close` says, so read up to the end of the answer's body.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !response_complete(&buf) {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// Whether `buf` holds a whole HTTP/1.1 response: its head, and as many body bytes as its
/// `Content-Length` says (chromedriver always sends one).
fn response_complete(buf: &[u8]) -> bool {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    buf.len() >= head_end + 4 + length
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A running chromedriver. Pages keep it alive; it is killed (with its browsers) when this and
/// every page have dropped.
#[derive(Debug, Clone)]
pub struct Browser {
    driver: Arc<Driver>,
}

impl Browser {
    /// Starts chromedriver on a free port (chromedriver picks it: `--port=0`, and it prints
    /// the port it took) and waits until `/status` says it is ready.
    pub async fn start() -> Result<Self, BrowserError> {
        let binary = chromedriver_binary()?;
        let chromium = chromium_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("pb-chromedriver-")
            .tempdir()?;
        let log = dir.path().join("chromedriver.log");
        let mut cmd = Command::new(&binary);
        cmd.arg("--port=0");
        // A process group of its own, for the browsers it starts: see `Driver`'s drop.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = spawn(cmd, &log, None)?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(COMMAND_TIMEOUT)
            .build()
            .map_err(|e| BrowserError::Start(format!("HTTP client: {e}")))?;
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let mut last = String::from("no port announced yet");
        let port = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(port) = announced_port(&text) {
                match http
                    .get(format!("http://127.0.0.1:{port}/status"))
                    .send()
                    .await
                {
                    Ok(resp) => match resp.json::<Value>().await {
                        Ok(v) if v["value"]["ready"] == Value::Bool(true) => break port,
                        Ok(v) => last = format!("/status: {v}"),
                        Err(e) => last = format!("/status: {e}"),
                    },
                    Err(e) => last = format!("/status: {e}"),
                }
            }
            if let Ok(Some(status)) = child.0.try_wait() {
                return Err(BrowserError::Start(format!(
                    "{} exited ({status}):\n{text}",
                    binary.display()
                )));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(BrowserError::Start(format!(
                    "{} not ready after {START_TIMEOUT:?} ({last}):\n{text}",
                    binary.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Ok(Self {
            driver: Arc::new(Driver {
                child,
                port,
                base: format!("http://127.0.0.1:{port}"),
                http,
                chromium,
                dir,
            }),
        })
    }

    /// chromedriver's URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.driver.base
    }

    /// chromedriver's log so far.
    pub fn log(&self) -> String {
        self.driver.log()
    }

    /// A new page: a WebDriver session of a headless Chromium with a fresh profile (its own
    /// cookies and storage).
    pub async fn page(&self) -> Result<Page, BrowserError> {
        let profile = tempfile::Builder::new().prefix("pb-chromium-").tempdir()?;
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| (*a).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "timeouts": { "pageLoad": 30_000, "script": 30_000, "implicit": 0 },
                    "goog:chromeOptions": {
                        "binary": self.driver.chromium,
                        "args": args,
                    },
                },
            },
        });
        let value = self
            .driver
            .send(reqwest::Method::POST, "/session", Some(caps), "new session")
            .await?;
        let session = value
            .get("sessionId")
            .and_then(Value::as_str)
            .ok_or_else(|| BrowserError::Protocol {
                command: "new session".to_owned(),
                detail: format!("no sessionId in {value}"),
            })?
            .to_owned();
        Ok(Page {
            driver: Arc::clone(&self.driver),
            session,
            open: true,
            _profile: profile,
        })
    }
}

/// The port in chromedriver's `ChromeDriver was started successfully on port N.`
fn announced_port(log: &str) -> Option<u16> {
    log.lines()
        .filter(|l| l.contains("started successfully"))
        .find_map(|l| {
            let tail = &l[l.rfind("on port ")? + "on port ".len()..];
            tail.trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .ok()
                .filter(|p| *p != 0)
        })
}

/// A cookie, as WebDriver reports it (and takes it in [`Page::add_cookie`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cookie {
    /// The name.
    pub name: String,
    /// The value.
    pub value: String,
    /// The path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// `Secure`.
    #[serde(default)]
    pub secure: bool,
    /// `HttpOnly`.
    #[serde(default)]
    pub http_only: bool,
    /// When it expires, in seconds since the epoch (`None`: a session cookie).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<u64>,
    /// `SameSite`: `Strict`, `Lax` or `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_site: Option<String>,
}

impl Cookie {
    /// A session cookie with only a name and a value (for [`Page::add_cookie`]).
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
            path: None,
            domain: None,
            secure: false,
            http_only: false,
            expiry: None,
            same_site: None,
        }
    }
}

/// One WebDriver session: a browser window with its own profile. The session is deleted (the
/// browser quits) on drop, or by [`Page::close`].
#[derive(Debug)]
pub struct Page {
    driver: Arc<Driver>,
    session: String,
    open: bool,
    /// The browser's profile, removed after the session is deleted.
    _profile: tempfile::TempDir,
}

impl Drop for Page {
    fn drop(&mut self) {
        if self.open {
            self.driver.delete_session_blocking(&self.session);
        }
    }
}

impl Page {
    /// The WebDriver session id.
    pub fn session_id(&self) -> &str {
        &self.session
    }

    async fn get(&self, path: &str, command: &str) -> Result<Value, BrowserError> {
        let path = format!("/session/{}{path}", self.session);
        self.driver
            .send(reqwest::Method::GET, &path, None, command)
            .await
    }

    async fn post(&self, path: &str, body: Value, command: &str) -> Result<Value, BrowserError> {
        let path = format!("/session/{}{path}", self.session);
        self.driver
            .send(reqwest::Method::POST, &path, Some(body), command)
            .await
    }

    async fn delete(&self, path: &str, command: &str) -> Result<Value, BrowserError> {
        let path = format!("/session/{}{path}", self.session);
        self.driver
            .send(reqwest::Method::DELETE, &path, None, command)
            .await
    }

    /// Deletes the session (the browser quits), reporting any error (dropping does the same,
    /// silently).
    pub async fn close(mut self) -> Result<(), BrowserError> {
        self.open = false;
        self.delete("", "delete session").await.map(drop)
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) -> Result<(), BrowserError> {
        self.post("/url", json!({ "url": url }), &format!("goto {url}"))
            .await
            .map(drop)
    }

    /// The current URL.
    pub async fn url(&self) -> Result<String, BrowserError> {
        string(self.get("/url", "url").await?, "url")
    }

    /// The document's title.
    pub async fn title(&self) -> Result<String, BrowserError> {
        string(self.get("/title", "title").await?, "title")
    }

    /// The document's HTML as the browser has it now.
    pub async fn source(&self) -> Result<String, BrowserError> {
        string(self.get("/source", "source").await?, "source")
    }

    /// Goes back in history.
    pub async fn back(&self) -> Result<(), BrowserError> {
        self.post("/back", json!({}), "back").await.map(drop)
    }

    /// Reloads the page.
    pub async fn refresh(&self) -> Result<(), BrowserError> {
        self.post("/refresh", json!({}), "refresh").await.map(drop)
    }

    /// The first element matching the CSS selector `css`; an error (`no such element`) if none.
    pub async fn find(&self, css: &str) -> Result<Element<'_>, BrowserError> {
        let command = format!("find {css:?}");
        let value = self
            .post(
                "/element",
                json!({ "using": "css selector", "value": css }),
                &command,
            )
            .await?;
        Ok(Element {
            page: self,
            id: element_id(&value, &command)?,
        })
    }

    /// Every element matching the CSS selector `css`, in document order (maybe none).
    pub async fn find_all(&self, css: &str) -> Result<Vec<Element<'_>>, BrowserError> {
        let command = format!("find all {css:?}");
        let value = self
            .post(
                "/elements",
                json!({ "using": "css selector", "value": css }),
                &command,
            )
            .await?;
        let items = value.as_array().ok_or_else(|| BrowserError::Protocol {
            command: command.clone(),
            detail: format!("not an array: {value}"),
        })?;
        items
            .iter()
            .map(|v| {
                Ok(Element {
                    page: self,
                    id: element_id(v, &command)?,
                })
            })
            .collect()
    }

    /// Waits up to `timeout` for an element matching `css`; the first one.
    pub async fn wait_for(
        &self,
        css: &str,
        timeout: Duration,
    ) -> Result<Element<'_>, BrowserError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.find_all(css).await {
                Ok(mut found) if !found.is_empty() => return Ok(found.swap_remove(0)),
                Ok(_) => {}
                Err(e) if e.is_transient() => {}
                Err(e) => return Err(e),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BrowserError::Timeout {
                    what: format!("an element matching {css:?}"),
                    timeout,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits up to `timeout` for an element matching `css` whose visible text contains
    /// `needle`; that element.
    pub async fn wait_for_text(
        &self,
        css: &str,
        needle: &str,
        timeout: Duration,
    ) -> Result<Element<'_>, BrowserError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen: Vec<String> = Vec::new();
        loop {
            match self.matching_text(css, needle, &mut seen).await {
                Ok(Some(el)) => return Ok(el),
                Ok(None) => {}
                Err(e) if e.is_transient() => {}
                Err(e) => return Err(e),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BrowserError::Timeout {
                    what: format!(
                        "an element matching {css:?} to contain {needle:?} (last seen: {seen:?})"
                    ),
                    timeout,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits up to `timeout` for an element matching `css` with visible text; that text (read
    /// again should the document change under it, as while a form's answer loads).
    pub async fn wait_for_text_of(
        &self,
        css: &str,
        timeout: Duration,
    ) -> Result<String, BrowserError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let read = async { self.find(css).await?.text().await }.await;
            match read {
                Ok(text) if !text.is_empty() => return Ok(text),
                Ok(_) => {}
                Err(e) if e.is_transient() => {}
                Err(e) => return Err(e),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BrowserError::Timeout {
                    what: format!("an element matching {css:?} with text"),
                    timeout,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn matching_text(
        &self,
        css: &str,
        needle: &str,
        seen: &mut Vec<String>,
    ) -> Result<Option<Element<'_>>, BrowserError> {
        seen.clear();
        for el in self.find_all(css).await? {
            let text = el.text().await?;
            if text.contains(needle) {
                return Ok(Some(el));
            }
            seen.push(text);
        }
        Ok(None)
    }

    /// Clears the element matching `css` (an input or a textarea) and types `text` into it;
    /// an element not there yet or replaced meanwhile is looked for again, as [`Page::click`]
    /// does.
    pub async fn fill(&self, css: &str, text: &str) -> Result<(), BrowserError> {
        self.settled(|| async { self.find(css).await?.fill(text).await })
            .await
    }

    /// Picks the `<option>` whose value is `value` in the `<select>` matching `css`.
    pub async fn select(&self, css: &str, value: &str) -> Result<(), BrowserError> {
        let select = self.find(css).await?;
        let option = format!("option[value=\"{}\"]", css_string(value));
        let command = format!("find {option:?} in {css:?}");
        let found = self
            .post(
                &format!("/element/{}/element", select.id),
                json!({ "using": "css selector", "value": option }),
                &command,
            )
            .await?;
        Element {
            page: self,
            id: element_id(&found, &command)?,
        }
        .click()
        .await
    }

    /// Clicks the element matching `css`. An element a live view replaced between finding and
    /// clicking it (stale: WebDriver clicked nothing), or not there yet, is looked for again
    /// for up to [`STALE_RETRY`].
    pub async fn click(&self, css: &str) -> Result<(), BrowserError> {
        self.settled(|| async { self.find(css).await?.click().await })
            .await
    }

    /// Runs `act` on an element until it finds the element in place: for up to
    /// [`STALE_RETRY`], an element not there yet (the page the last click opened still
    /// loading) or replaced meanwhile (a live view's swap) is looked for again, since WebDriver
    /// did nothing with it.
    async fn settled<'a, F, Fut>(&'a self, act: F) -> Result<(), BrowserError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), BrowserError>> + 'a,
    {
        let deadline = tokio::time::Instant::now() + STALE_RETRY;
        loop {
            match act().await {
                Err(e)
                    if matches!(
                        e.webdriver_error(),
                        Some("stale element reference" | "no such element")
                    ) && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(POLL).await;
                }
                other => return other,
            }
        }
    }

    /// The visible text of the element matching `css`.
    pub async fn text(&self, css: &str) -> Result<String, BrowserError> {
        self.find(css).await?.text().await
    }

    /// Runs `js` as a function body in the page (`return …` gives the result), with `args` as
    /// `arguments` ([`Element::as_arg`] passes an element); its result.
    pub async fn execute(&self, js: &str, args: Vec<Value>) -> Result<Value, BrowserError> {
        self.post(
            "/execute/sync",
            json!({ "script": js, "args": args }),
            "execute",
        )
        .await
    }

    /// A PNG of the viewport.
    pub async fn screenshot_png(&self) -> Result<Vec<u8>, BrowserError> {
        let b64 = string(self.get("/screenshot", "screenshot").await?, "screenshot")?;
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| BrowserError::Protocol {
                command: "screenshot".to_owned(),
                detail: format!("not base64: {e}"),
            })
    }

    /// Writes a PNG of the viewport to `path`.
    pub async fn save_screenshot(&self, path: impl AsRef<Path>) -> Result<(), BrowserError> {
        let png = self.screenshot_png().await?;
        std::fs::write(path, png)?;
        Ok(())
    }

    /// The cookies visible to the current page (HttpOnly ones too).
    pub async fn cookies(&self) -> Result<Vec<Cookie>, BrowserError> {
        let value = self.get("/cookie", "cookies").await?;
        serde_json::from_value(value).map_err(|e| BrowserError::Protocol {
            command: "cookies".to_owned(),
            detail: e.to_string(),
        })
    }

    /// The cookie called `name` visible to the current page, if any.
    pub async fn cookie(&self, name: &str) -> Result<Option<Cookie>, BrowserError> {
        Ok(self.cookies().await?.into_iter().find(|c| c.name == name))
    }

    /// Adds a cookie for the current page's domain (the page must be loaded first).
    pub async fn add_cookie(&self, cookie: &Cookie) -> Result<(), BrowserError> {
        self.post(
            "/cookie",
            json!({ "cookie": cookie }),
            &format!("add cookie {:?}", cookie.name),
        )
        .await
        .map(drop)
    }

    /// Deletes every cookie visible to the current page.
    pub async fn delete_cookies(&self) -> Result<(), BrowserError> {
        self.delete("/cookie", "delete cookies").await.map(drop)
    }
}

/// A string result.
fn string(value: Value, command: &str) -> Result<String, BrowserError> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(BrowserError::Protocol {
            command: command.to_owned(),
            detail: format!("not a string: {other}"),
        }),
    }
}

/// The id of an element reference.
fn element_id(value: &Value, command: &str) -> Result<String, BrowserError> {
    value
        .get(ELEMENT_KEY)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| BrowserError::Protocol {
            command: command.to_owned(),
            detail: format!("not an element reference: {value}"),
        })
}

/// `s` escaped for a double-quoted CSS string.
fn css_string(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// An element of a [`Page`] (it goes stale when the page navigates away).
#[derive(Debug, Clone)]
pub struct Element<'p> {
    page: &'p Page,
    id: String,
}

impl Element<'_> {
    /// WebDriver's id of the element.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The element as an argument of [`Page::execute`].
    pub fn as_arg(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }

    /// Clicks it (scrolling it into view; an error if something else would get the click).
    pub async fn click(&self) -> Result<(), BrowserError> {
        self.page
            .post(&format!("/element/{}/click", self.id), json!({}), "click")
            .await
            .map(drop)
    }

    /// Its visible text.
    pub async fn text(&self) -> Result<String, BrowserError> {
        let v = self
            .page
            .get(&format!("/element/{}/text", self.id), "element text")
            .await?;
        string(v, "element text")
    }

    /// Its attribute `name` as written in the HTML (`None` if absent).
    pub async fn attr(&self, name: &str) -> Result<Option<String>, BrowserError> {
        let command = format!("attribute {name:?}");
        match self
            .page
            .get(&format!("/element/{}/attribute/{name}", self.id), &command)
            .await?
        {
            Value::Null => Ok(None),
            v => string(v, &command).map(Some),
        }
    }

    /// Its DOM property `name` (such as `value` or `checked`), as JSON.
    pub async fn property(&self, name: &str) -> Result<Value, BrowserError> {
        self.page
            .get(
                &format!("/element/{}/property/{name}", self.id),
                &format!("property {name:?}"),
            )
            .await
    }

    /// Clears it and types `text` into it.
    pub async fn fill(&self, text: &str) -> Result<(), BrowserError> {
        self.page
            .post(&format!("/element/{}/clear", self.id), json!({}), "clear")
            .await?;
        self.page
            .post(
                &format!("/element/{}/value", self.id),
                json!({ "text": text }),
                "type",
            )
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_port_chromedriver_announces() {
        let log = "Starting ChromeDriver 156.0 (abc) on port 0\n\
                   Only local connections are allowed.\n\
                   ChromeDriver was started successfully on port 44455.\n";
        assert_eq!(announced_port(log), Some(44455));
        assert_eq!(
            announced_port("Starting ChromeDriver 156.0 on port 0\n"),
            None
        );
    }

    #[test]
    fn knows_when_an_answer_is_whole() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\n";
        assert!(!response_complete(&head[..20]));
        assert!(!response_complete(head));
        assert!(response_complete(
            &[&head[..], b"{\"value\":null}"].concat()
        ));
        assert!(response_complete(b"HTTP/1.1 204 No Content\r\n\r\n"));
    }

    #[test]
    fn escapes_css_strings() {
        assert_eq!(css_string(r#"a"b\c"#), r#"a\"b\\c"#);
    }

    #[test]
    fn missing_binaries_say_how_to_install_them() {
        let e = BrowserError::Missing {
            what: "chromedriver",
            var: "PATCHBAY_CHROMEDRIVER",
            looked: "here".to_owned(),
        };
        assert!(
            e.to_string()
                .contains("apt-get install chromium chromium-driver")
        );
    }
}
