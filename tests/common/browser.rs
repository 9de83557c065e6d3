//! A small Chrome DevTools Protocol driver for browser tests: headless Chromium (Debian's
//! `chromium`), one page, real mouse clicks and key presses, JavaScript evaluation, console
//! errors and screenshots. The browser is killed when the driver is dropped.
//!
//! The binary: env `GAITTUNE_CHROMIUM`, else `chromium`, `chromium-browser` or
//! `google-chrome` on PATH. Without one, [`Browser::launch_or_skip`] prints a visible
//! SKIPPED line and returns None, except under `CI=true`, where it panics.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// How long one DevTools call may take.
const CALL_LIMIT: Duration = Duration::from_secs(30);
/// The window (and screenshot) size.
pub const VIEWPORT: (u32, u32) = (1400, 1000);

/// The Chromium binary to drive, if there is one.
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GAITTUNE_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

/// A headless Chromium with one page attached.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    /// Events received while waiting for answers, not yet looked at.
    events: Vec<Value>,
    errors: Vec<String>,
}

impl Browser {
    /// Launches the browser, or says why not: a visible SKIPPED line and None when there is
    /// no browser, a panic instead when `CI=true` (a missing browser fails CI).
    pub fn launch_or_skip() -> Option<Browser> {
        match find_chromium() {
            Some(binary) => Some(Browser::launch(&binary)),
            None => {
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("no chromium on this machine (install Debian's chromium): CI must run the browser tests");
                }
                // Past the test harness's capture: the skip must be seen.
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: no chromium (install Debian's chromium)"
                );
                None
            }
        }
    }

    /// Launches `binary` headless and attaches to a new blank page.
    pub fn launch(binary: &Path) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new(binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                &format!("--window-size={},{}", VIEWPORT.0, VIEWPORT.1),
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        // Reads stderr to its end (so the browser never blocks on it), passing on the
        // DevTools address.
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("ws://") {
                    if line.contains("DevTools listening on") {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(line[at..].trim().to_string());
                        }
                    }
                }
            }
        });
        let url = match rx.recv_timeout(CALL_LIMIT) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} printed no DevTools address", binary.display());
            }
        };
        let (ws, _) = tungstenite::connect(url.as_str()).expect("connect to DevTools");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("read timeout");
        }
        let mut browser = Browser {
            child,
            _profile: profile,
            ws,
            session: String::new(),
            next_id: 0,
            events: Vec::new(),
            errors: Vec::new(),
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        browser.page_call("Runtime.enable", json!({}));
        browser.page_call("Page.enable", json!({}));
        browser.page_call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": VIEWPORT.0, "height": VIEWPORT.1, "deviceScaleFactor": 1, "mobile": false}),
        );
        browser
    }

    /// Sends one message and waits for its answer (browser-level when `session` is None).
    fn send(&mut self, method: &str, params: Value, session: Option<String>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .unwrap_or_else(|e| panic!("DevTools: cannot send {method}: {e}"));
        let until = Instant::now() + CALL_LIMIT;
        loop {
            assert!(
                Instant::now() < until,
                "DevTools: no answer to {method} within {CALL_LIMIT:?}"
            );
            let Some(msg) = self.read_one() else { continue };
            if msg["id"] == json!(id) {
                if let Some(err) = msg.get("error") {
                    panic!("DevTools: {method} failed: {err}");
                }
                return msg["result"].clone();
            }
            self.note_event(msg);
        }
    }

    /// One message from the browser, or None when none came within the read timeout.
    fn read_one(&mut self) -> Option<Value> {
        match self.ws.read() {
            Ok(Message::Text(text)) => Some(serde_json::from_str(text.as_str()).expect("JSON")),
            Ok(_) => None,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("DevTools connection failed: {e}"),
        }
    }

    fn note_event(&mut self, msg: Value) {
        match msg["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let d = &msg["params"]["exceptionDetails"];
                let text = d["exception"]["description"]
                    .as_str()
                    .or(d["text"].as_str())
                    .unwrap_or("exception");
                self.errors.push(format!(
                    "{text} (line {}, column {})",
                    d["lineNumber"], d["columnNumber"]
                ));
            }
            Some("Runtime.consoleAPICalled") if msg["params"]["type"] == json!("error") => {
                let args: Vec<String> = msg["params"]["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        a["value"]
                            .as_str()
                            .map(str::to_string)
                            .or_else(|| a["description"].as_str().map(str::to_string))
                            .unwrap_or_else(|| a["value"].to_string())
                    })
                    .collect();
                self.errors
                    .push(format!("console.error: {}", args.join(" ")));
            }
            _ => {}
        }
        self.events.push(msg);
        if self.events.len() > 1000 {
            self.events.drain(..500);
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None)
    }

    /// A DevTools call on the page.
    pub fn page_call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(session))
    }

    /// Loads `url` and waits until the document has loaded.
    pub fn navigate(&mut self, url: &str) {
        let r = self.page_call("Page.navigate", json!({"url": url}));
        if let Some(e) = r.get("errorText") {
            panic!("navigating to {url} failed: {e}");
        }
        self.wait_for(CALL_LIMIT, "the page to load", |b| {
            b.eval("document.readyState") == json!("complete")
        });
    }

    /// Evaluates `js` in the page (awaiting a promise) and returns its value; panics on an
    /// exception.
    pub fn eval(&mut self, js: &str) -> Value {
        let r = self.page_call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(d) = r.get("exceptionDetails") {
            panic!("{js} threw: {d}");
        }
        r["result"].get("value").cloned().unwrap_or(Value::Null)
    }

    /// Waits until `cond` holds, polling; panics after `limit` naming `what`.
    pub fn wait_for(
        &mut self,
        limit: Duration,
        what: &str,
        mut cond: impl FnMut(&mut Browser) -> bool,
    ) {
        let until = Instant::now() + limit;
        while !cond(self) {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The centre of the element `selector` in the viewport (scrolled into view), if shown.
    pub fn centre(&mut self, selector: &str) -> (f64, f64) {
        let js = format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) return null; \
             e.scrollIntoView({{block: 'center', inline: 'center'}}); \
             const r = e.getBoundingClientRect(); \
             return (r.width > 0 && r.height > 0) ? [r.left + r.width / 2, r.top + r.height / 2] : null; }})()",
            sel = json!(selector)
        );
        let at = self.eval(&js);
        let at = at
            .as_array()
            .unwrap_or_else(|| panic!("no visible element {selector}"));
        (at[0].as_f64().unwrap(), at[1].as_f64().unwrap())
    }

    /// A real mouse click (move, press, release) at the centre of `selector`. Panics if
    /// another element covers that point.
    pub fn click(&mut self, selector: &str) {
        let (x, y) = self.centre(selector);
        let hit = self.eval(&format!(
            "(() => {{ const e = document.querySelector({sel}); const h = document.elementFromPoint({x}, {y}); \
             return !!h && (h === e || e.contains(h)); }})()",
            sel = json!(selector)
        ));
        assert_eq!(hit, json!(true), "{selector} is covered at its centre");
        self.page_call(
            "Input.dispatchMouseEvent",
            json!({"type": "mouseMoved", "x": x, "y": y}),
        );
        for kind in ["mousePressed", "mouseReleased"] {
            self.page_call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "buttons": 1, "clickCount": 1}),
            );
        }
    }

    /// Presses and releases the space bar on whatever has the focus.
    pub fn press_space(&mut self) {
        let key = json!({"key": " ", "code": "Space", "windowsVirtualKeyCode": 32, "nativeVirtualKeyCode": 32});
        let mut down = key.clone();
        down["type"] = json!("keyDown");
        down["text"] = json!(" ");
        self.page_call("Input.dispatchKeyEvent", down);
        let mut up = key;
        up["type"] = json!("keyUp");
        self.page_call("Input.dispatchKeyEvent", up);
    }

    /// The exceptions thrown and console errors logged in the page so far.
    pub fn console_errors(&mut self) -> Vec<String> {
        // Takes what has arrived already.
        while let Some(msg) = self.read_one() {
            self.note_event(msg);
        }
        self.errors.clone()
    }

    /// Saves a PNG of the viewport to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let r = self.page_call("Page.captureScreenshot", json!({"format": "png"}));
        let data = r["data"].as_str().expect("screenshot data");
        std::fs::write(path, base64_decode(data)).expect("write the screenshot");
    }
}

impl Browser {
    /// Saves a PNG of the whole page, beyond the viewport, to `path`.
    pub fn screenshot_full(&mut self, path: &Path) {
        let metrics = self.page_call("Page.getLayoutMetrics", json!({}));
        let size = &metrics["cssContentSize"];
        let (w, h) = (
            size["width"].as_f64().unwrap_or(VIEWPORT.0 as f64),
            size["height"].as_f64().unwrap_or(VIEWPORT.1 as f64),
        );
        let r = self.page_call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true,
                   "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}}),
        );
        let data = r["data"].as_str().expect("screenshot data");
        std::fs::write(path, base64_decode(data)).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Standard base64 (with padding) to bytes.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {:?}", c as char),
        }
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | value(c) << (18 - 6 * i));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len() - 1]);
    }
    out
}

#[test]
fn base64_decodes() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGk="), b"hi");
    assert_eq!(base64_decode("YWJj"), b"abc");
}
