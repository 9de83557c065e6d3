//! The live dashboard: a small HTTP server (axum) for a browser on the operator's desk.
//!
//! One page (`GET /`, everything inline: the robot lab may be offline) shows the trial in
//! flight live, the study's history, and the operator's buttons, STOP first. The page talks
//! to a JSON API guarded by a token (the URL the daemon prints carries it):
//!
//! | route                   | answer |
//! |-------------------------|--------|
//! | `GET /`                 | the page (no token needed: it holds no data; it reads its token from its URL) |
//! | `GET /api/status`       | the [`Reply`] to [`Command::Status`] |
//! | `GET /api/trials`       | the [`Reply`] to [`Command::Trials`] (`status` holds the trials) |
//! | `GET /api/events`       | server-sent events: the desk's recent events, then live ones, one JSON object each |
//! | `POST /api/command`     | a JSON [`Command`] in, its [`Reply`] out; recorded as by `dashboard (PEER)` |
//!
//! The token goes in `?token=` or the `x-gaittune-token` header; without it the API answers
//! 401. The server runs on a thread of its own with its own current-thread tokio runtime, so
//! nothing it does can delay the trial loop's runtime (heartbeats, EStop). Commands that may
//! block (`release` waits for the robot's acknowledgement) run on tokio's blocking pool;
//! `stop` runs at once in its handler: it only sets a flag and writes one EStop frame.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use rand::RngCore;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{broadcast, oneshot};

use super::commands::{Command, Operator, Reply};

/// The page, with `/*@PLOTS@*/` where the plotting code goes.
const PAGE_TEMPLATE: &str = include_str!("assets/dashboard.html");
/// The plotting functions (pure: an SVG element, data, options), shared with static reports.
pub const PLOTS_JS: &str = include_str!("assets/plots.js");
/// Where [`PLOTS_JS`] is inlined in the page.
const PLOTS_MARK: &str = "/*@PLOTS@*/";
/// The header that may carry the token (the page sends it with commands).
pub const TOKEN_HEADER: &str = "x-gaittune-token";
/// How long shutting the server down waits for requests still running (a `release`).
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);
/// The page forbids itself any origin but this server (it must work offline, and loads
/// nothing from elsewhere).
const PAGE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The served page: the template with the plotting code inlined.
pub fn page() -> &'static str {
    static PAGE: OnceLock<String> = OnceLock::new();
    PAGE.get_or_init(|| PAGE_TEMPLATE.replacen(PLOTS_MARK, PLOTS_JS, 1))
}

/// A new secret for the dashboard's URL: 128 random bits from the OS, in hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `given` is the token, compared in time independent of where they differ.
fn token_matches(token: &str, given: &str) -> bool {
    let (a, b) = (token.as_bytes(), given.as_bytes());
    if a.len() != b.len() || a.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A running dashboard server; dropping it shuts the server down.
pub struct Dashboard {
    addr: SocketAddr,
    token: String,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Clone)]
struct AppState {
    operator: Operator,
    token: Arc<str>,
}

/// The `?token=` query parameter.
#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

impl Dashboard {
    /// Binds `addr` and serves on a thread of its own (its own current-thread tokio runtime:
    /// never on the trial loop's runtime, which carries heartbeats and EStop).
    pub fn serve(
        addr: SocketAddr,
        operator: Operator,
        token: String,
    ) -> std::io::Result<Dashboard> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let app = router(AppState {
            operator,
            token: token.as_str().into(),
        });
        let (tx, rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("dashboard".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!("dashboard: cannot serve on {addr}: {e}");
                            return;
                        }
                    };
                    let server = axum::serve(
                        listener,
                        app.into_make_service_with_connect_info::<SocketAddr>(),
                    );
                    tokio::select! {
                        result = server => if let Err(e) = result {
                            tracing::error!("dashboard: server stopped: {e}");
                        },
                        _ = rx => {}
                    }
                });
                // Open connections (event streams) are dropped here; a blocking command still
                // running finishes on its own.
                runtime.shutdown_timeout(SHUTDOWN_GRACE);
            })?;
        Ok(Dashboard {
            addr,
            token,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// The URL to open, with the token: `http://ADDR/?token=TOKEN` (the real bound port when
    /// `addr` had port 0).
    pub fn url(&self) -> String {
        format!("http://{}/?token={}", self.addr, self.token)
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(serve_page))
        .route("/api/status", get(status))
        .route("/api/trials", get(trials))
        .route("/api/events", get(events))
        .route("/api/command", post(command))
        .with_state(state)
}

/// The 401 answer: what to open instead.
fn unauthorized() -> Response {
    let body = Reply {
        ok: false,
        message: "missing or wrong token: open the dashboard URL the daemon printed \
                  (http://…/?token=…)"
            .into(),
        status: serde_json::Value::Null,
    };
    (StatusCode::UNAUTHORIZED, Json(body)).into_response()
}

/// Whether the request carries the token, in its query or its header.
fn authorized(state: &AppState, query: &TokenQuery, headers: &HeaderMap) -> bool {
    let from_header = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
    [query.token.as_deref(), from_header]
        .into_iter()
        .flatten()
        .any(|given| token_matches(&state.token, given))
}

async fn serve_page() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(PAGE_CSP),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        page(),
    )
        .into_response()
}

/// Runs a command that may block (it reads the study, or waits) on the blocking pool.
async fn execute_blocking(operator: Operator, command: Command, by: String) -> Reply {
    match tokio::task::spawn_blocking(move || operator.execute(command, &by)).await {
        Ok(reply) => reply,
        Err(e) => Reply {
            ok: false,
            message: format!("the command failed inside the daemon: {e}"),
            status: serde_json::Value::Null,
        },
    }
}

fn by(peer: SocketAddr) -> String {
    format!("dashboard ({peer})")
}

async fn status(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&state, &query, &headers) {
        return unauthorized();
    }
    // Reads the desk's status under its lock: never waits.
    Json(state.operator.execute(Command::Status, &by(peer))).into_response()
}

async fn trials(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&state, &query, &headers) {
        return unauthorized();
    }
    Json(execute_blocking(state.operator.clone(), Command::Trials, by(peer)).await).into_response()
}

async fn command(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&state, &query, &headers) {
        return unauthorized();
    }
    let command: Command = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            let reply = Reply {
                ok: false,
                message: format!("not a command: {e}"),
                status: serde_json::Value::Null,
            };
            return (StatusCode::BAD_REQUEST, Json(reply)).into_response();
        }
    };
    let reply = if command == Command::Stop {
        // At once, on this thread: it sets a flag and writes one EStop frame.
        state.operator.execute(Command::Stop, &by(peer))
    } else {
        execute_blocking(state.operator.clone(), command, by(peer)).await
    };
    Json(reply).into_response()
}

/// What the event stream sends next: the recent events first, then live ones.
struct EventFeed {
    recent: VecDeque<Arc<str>>,
    live: broadcast::Receiver<Arc<str>>,
}

impl EventFeed {
    async fn next(mut self) -> Option<(Event, EventFeed)> {
        if let Some(line) = self.recent.pop_front() {
            return Some((Event::default().data(&*line), self));
        }
        match self.live.recv().await {
            Ok(line) => Some((Event::default().data(&*line), self)),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                let data = json!({ "event": "lagged", "missed": missed }).to_string();
                Some((Event::default().event("lagged").data(data), self))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

fn event_stream(feed: EventFeed) -> impl Stream<Item = Result<Event, std::convert::Infallible>> {
    stream::unfold(feed, |feed| async move {
        feed.next().await.map(|(event, feed)| (Ok(event), feed))
    })
}

async fn events(
    State(state): State<AppState>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&state, &query, &headers) {
        return unauthorized();
    }
    let (recent, live) = state.operator.desk().recent_and_subscribe();
    let feed = EventFeed {
        recent: recent.into(),
        live,
    };
    Sse::new(event_stream(feed))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;

    use serde_json::{Map, Value};

    use super::super::commands::StudyActions;
    use super::super::desk::Desk;
    use super::*;

    struct Trials;
    impl StudyActions for Trials {
        fn fail(&self, trial: u64, _: bool, _: Option<&str>, _: &str) -> Result<String, String> {
            Ok(format!("trial {trial} failed"))
        }
        fn enqueue(&self, _: &Map<String, Value>, _: &str) -> Result<String, String> {
            Err("no space".into())
        }
        fn trials(&self) -> Result<Value, String> {
            Ok(json!([{"number": 0, "state": "COMPLETE", "value": 1.5}]))
        }
    }

    fn serve() -> (Desk, Dashboard) {
        let desk = Desk::new();
        let operator = Operator::new(desk.clone(), Arc::new(Trials));
        let dash = Dashboard::serve("127.0.0.1:0".parse().unwrap(), operator, "c0ffee".into())
            .expect("serve");
        (desk, dash)
    }

    /// One HTTP/1.1 request; the status code and the body.
    fn request(dash: &Dashboard, head: &str, body: &str) -> (u16, String) {
        let mut s = TcpStream::connect(dash.local_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "{head} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        let code = answer[9..12].parse().unwrap();
        let body = answer.split_once("\r\n\r\n").unwrap().1.to_string();
        (code, body)
    }

    #[test]
    fn tokens_are_random_hex_and_checked_whole() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(token_matches(&a, &a.clone()));
        assert!(!token_matches(&a, &a[..31]));
        assert!(!token_matches(&a, &b));
        assert!(!token_matches("", ""));
    }

    #[test]
    fn the_page_is_whole_and_loads_nothing_from_elsewhere() {
        let page = page();
        assert!(!page.contains(PLOTS_MARK));
        assert!(page.contains("GaitPlots") && page.contains(r#"id="stop""#));
        for outside in [
            "<script src",
            "<link",
            "src=\"http",
            "href=\"http",
            "url(http",
            "@import",
        ] {
            assert!(!page.contains(outside), "the page refers to {outside}");
        }
    }

    #[test]
    fn routes_answer_with_the_token_only() {
        let (desk, dash) = serve();
        assert!(dash.url().ends_with("/?token=c0ffee"));
        assert_ne!(dash.local_addr().port(), 0);
        let (code, body) = request(&dash, "GET /", "");
        assert_eq!(code, 200);
        assert!(body.contains(r#"id="stop""#));

        let (code, body) = request(&dash, "GET /api/status", "");
        assert_eq!(code, 401);
        assert!(body.contains("URL the daemon printed"), "{body}");
        assert_eq!(request(&dash, "GET /api/status?token=c0ffe", "").0, 401);

        desk.report(json!({"trial": 4}));
        let (code, body) = request(&dash, "GET /api/status?token=c0ffee", "");
        assert_eq!(code, 200);
        let reply: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(reply["status"]["trial"], json!(4));

        let (_, body) = request(&dash, "GET /api/trials?token=c0ffee", "");
        let reply: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(reply["status"][0]["value"], json!(1.5));

        let (code, _) = request(&dash, "POST /api/command", r#"{"cmd":"skip"}"#);
        assert_eq!(code, 401);
        assert!(desk.take_disruptions().is_empty());
        let (code, body) = request(
            &dash,
            "POST /api/command?token=c0ffee",
            r#"{"cmd":"fail","trial":2}"#,
        );
        assert_eq!(code, 200);
        assert!(body.contains("trial 2 failed"), "{body}");
        let (code, _) = request(&dash, "POST /api/command?token=c0ffee", r#"{"cmd":"fly"}"#);
        assert_eq!(code, 400);
    }

    #[test]
    fn commands_are_recorded_as_the_dashboards() {
        let (desk, dash) = serve();
        let mut s = TcpStream::connect(dash.local_addr()).unwrap();
        let body = r#"{"cmd":"pause","now":false}"#;
        write!(
            s,
            "POST /api/command HTTP/1.1\r\nHost: t\r\n{TOKEN_HEADER}: c0ffee\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(desk.paused());
        let (recent, _) = desk.recent_and_subscribe();
        let op: Value = serde_json::from_str(recent.last().unwrap()).unwrap();
        let by = op["by"].as_str().unwrap();
        assert!(by.starts_with("dashboard (127.0.0.1:"), "{by}");
    }

    #[test]
    fn serves_and_shuts_down_from_inside_another_runtime() {
        // The daemon starts (and drops) the dashboard from its trial loop's runtime.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let status = rt.block_on(async {
            let (_desk, dash) = serve();
            let code = request(&dash, "GET /api/status?token=c0ffee", "").0;
            drop(dash);
            code
        });
        assert_eq!(status, 200);
    }

    #[test]
    fn events_stream_the_recent_then_the_live() {
        let (desk, dash) = serve();
        desk.publish("episode_started", json!({"trial": 1, "episode": 0}));
        let mut s = TcpStream::connect(dash.local_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET /api/events?token=c0ffee HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        .unwrap();
        let mut lines = BufReader::new(s).lines();
        let mut next_data = || loop {
            let line = lines.next().unwrap().unwrap();
            if let Some(data) = line.strip_prefix("data: ") {
                break serde_json::from_str::<Value>(data).unwrap();
            }
        };
        assert_eq!(next_data()["event"], json!("episode_started"));
        desk.publish("step", json!({"trial": 1, "episode": 0, "step": 1}));
        assert_eq!(next_data()["step"], json!(1));
        drop(dash); // shuts down with the stream open
    }
}
