//! The live dashboard in a real browser (headless Chromium over the DevTools protocol),
//! against an in-process harness: a desk, a fake study with finished trials (complete,
//! pruned, unsafe, failed), and a thread standing in for the trial loop that streams
//! telemetry, holds on an operator's stop and acknowledges releases.
//!
//! Checks: live telemetry reaches the page; the history charts and the table draw; a real
//! mouse click on STOP stops the desk, recorded as the dashboard's, and the page shows the
//! answer; release goes through; the space bar is STOP too (but not while typing); the fail
//! form and the enqueue box reach the study; no console errors; the API refuses a request
//! without the token. With env `GAITTUNE_SCREENSHOT=path.png` the page (its first screen) is
//! saved as a PNG; with `GAITTUNE_SCREENSHOT_FULL=path.png` the whole page.

#[path = "common/browser.rs"]
mod browser;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use gaittune::control::commands::{Operator, StudyActions};
use gaittune::control::dashboard::{new_token, Dashboard};
use gaittune::control::desk::{Desk, Disruption};
use serde_json::{json, Map, Value};

use browser::Browser;

/// Every wait in this test gives up after this long.
const LIMIT: Duration = Duration::from_secs(20);
/// Steps per simulated episode.
const EPISODE_STEPS: u64 = 150;
/// The trial in flight.
const LIVE_TRIAL: u64 = 7;

/// An operator's verdict as the study received it: trial, unsafe, note, by.
type Verdict = (u64, bool, Option<String>, String);

/// A study with a few finished trials; records the operator's verdicts and enqueues.
#[derive(Default)]
struct FakeStudy {
    verdicts: Mutex<Vec<Verdict>>,
    enqueued: Mutex<Vec<Map<String, Value>>>,
}

impl StudyActions for FakeStudy {
    fn fail(
        &self,
        trial: u64,
        unsafe_: bool,
        note: Option<&str>,
        by: &str,
    ) -> Result<String, String> {
        if trial >= LIVE_TRIAL {
            return Err(format!("trial {trial} has not finished"));
        }
        self.verdicts.lock().unwrap().push((
            trial,
            unsafe_,
            note.map(str::to_string),
            by.to_string(),
        ));
        Ok(format!("trial {trial} recorded FAIL"))
    }

    fn enqueue(&self, params: &Map<String, Value>, _by: &str) -> Result<String, String> {
        self.enqueued.lock().unwrap().push(params.clone());
        Ok(format!("enqueued {}", Value::Object(params.clone())))
    }

    fn trials(&self) -> Result<Value, String> {
        let curve = |end: f64| {
            let mut m = Map::new();
            for step in (20..=200).step_by(20) {
                m.insert(
                    step.to_string(),
                    json!(end * (1.0 - (-(step as f64) / 60.0).exp())),
                );
            }
            Value::Object(m)
        };
        Ok(json!([
            {"number": 0, "state": "COMPLETE", "value": 0.42,
             "params": {"kp": 20.0, "freq_hz": 1.2, "gait": "trot"},
             "intermediate": curve(0.42), "attrs": {}},
            {"number": 1, "state": "COMPLETE", "value": 0.71,
             "params": {"kp": 35.0, "freq_hz": 1.9, "gait": "trot"},
             "intermediate": curve(0.71), "attrs": {}},
            {"number": 2, "state": "PRUNED", "value": 0.12, "prune_reason": "poor",
             "params": {"kp": 12.0, "freq_hz": 0.8, "gait": "walk"},
             // The array form, as `gaittune export` writes it.
             "intermediate": [[20, 0.05], [40, 0.09], [60, 0.12]], "attrs": {}},
            {"number": 3, "state": "PRUNED", "value": 0.3, "prune_reason": "unsafe",
             "params": {"kp": 58.0, "freq_hz": 3.6, "gait": "bound"},
             "intermediate": {"20": 0.2, "40": 0.3},
             "attrs": {"unsafe": {"source": "envelope", "limit": "max_roll_deg",
                                  "value": 34.2, "threshold": 30.0, "excess": 4.2}}},
            {"number": 4, "state": "FAIL", "value": null,
             "params": {"kp": 44.0, "freq_hz": 2.4, "gait": "trot"},
             "attrs": {"fail_reason": "link lost"}},
            {"number": 5, "state": "COMPLETE", "value": 0.66,
             "params": {"kp": 30.0, "freq_hz": 2.1, "gait": "walk"},
             "intermediate": curve(0.66)},
            {"number": 6, "state": "COMPLETE", "value": 0.8,
             "params": {"kp": 38.0, "freq_hz": 2.0, "gait": "trot"},
             "intermediate": curve(0.8), "attrs": {}},
            {"number": LIVE_TRIAL, "state": "RUNNING", "value": null,
             "params": {"kp": 40.0, "freq_hz": 2.2, "gait": "trot"}}
        ]))
    }
}

/// Stands in for the trial loop: streams steps, holds while the operator's stop holds (taking
/// the disruptions as the loop would) and acknowledges releases.
struct FakeTrialLoop {
    done: Arc<AtomicBool>,
    taken: Arc<Mutex<Vec<Disruption>>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeTrialLoop {
    fn start(desk: Desk) -> FakeTrialLoop {
        let done = Arc::new(AtomicBool::new(false));
        let taken = Arc::new(Mutex::new(Vec::new()));
        let (d, t) = (done.clone(), taken.clone());
        let thread = std::thread::spawn(move || run_trial_loop(&desk, &d, &t));
        FakeTrialLoop {
            done,
            taken,
            thread: Some(thread),
        }
    }

    fn stops(&self) -> Vec<String> {
        self.taken
            .lock()
            .unwrap()
            .iter()
            .filter(|d| matches!(d, Disruption::Stop { .. }))
            .map(|d| d.by().to_string())
            .collect()
    }

    /// The requests taken so far: (action, by).
    fn taken(&self) -> Vec<(&'static str, String)> {
        self.taken
            .lock()
            .unwrap()
            .iter()
            .map(|d| (d.action(), d.by().to_string()))
            .collect()
    }
}

impl Drop for FakeTrialLoop {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run_trial_loop(desk: &Desk, done: &AtomicBool, taken: &Mutex<Vec<Disruption>>) {
    let params = json!({"kp": 40.0, "freq_hz": 2.2, "gait": "trot"});
    desk.report(json!({
        "study": "walk-lab", "trial": LIVE_TRIAL, "params": params, "episode": 0, "step": 0,
        "robot_state": "Running", "waiting_for": null, "size": 20, "operator_go": false,
        "best": {"trial": 6, "value": 0.8},
        "counts": {"complete": 4, "pruned": 2, "fail": 1, "running": 1, "waiting": 0},
        "safety": {"max_roll_deg": 30.0, "max_pitch_deg": 30.0, "min_body_height_m": 0.1,
                   "max_joint_temp_c": 75.0},
    }));
    desk.publish(
        "trial_started",
        json!({"trial": LIVE_TRIAL, "params": params}),
    );
    let (mut episode, mut step, mut held) = (0u64, 0u64, false);
    while !done.load(Ordering::SeqCst) {
        taken.lock().unwrap().extend(desk.take_disruptions());
        if desk.stopped() {
            if !held {
                held = true;
                desk.report(json!({"robot_state": "EStop", "waiting_for": "operator release"}));
                desk.publish("robot", json!({"state": "EStop"}));
                desk.publish("waiting", json!({"for": "operator release"}));
            }
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        if held {
            // Released: ClearEStop went out and the robot acknowledged it; the trial is
            // re-queued and run again from a new episode.
            held = false;
            desk.release_done();
            desk.report(json!({"robot_state": "Running", "waiting_for": null}));
            desk.publish("robot", json!({"state": "Running"}));
            step = EPISODE_STEPS;
        }
        if step == EPISODE_STEPS || (episode == 0 && step == 0) {
            if step == EPISODE_STEPS {
                desk.publish(
                    "episode_ended",
                    json!({"trial": LIVE_TRIAL, "episode": episode, "return": 0.4 * step as f64 / 100.0,
                           "steps": step, "status": "completed"}),
                );
                episode += 1;
            }
            step = 0;
            desk.publish(
                "episode_started",
                json!({"trial": LIVE_TRIAL, "episode": episode}),
            );
            desk.report(json!({"episode": episode}));
        }
        step += 1;
        let s = step as f64 / 10.0 + episode as f64;
        let telemetry = json!({
            "roll": 8.0 * s.sin(), "pitch": 4.0 * (0.7 * s).cos(),
            "height": 0.28 + 0.02 * (1.3 * s).sin(), "temp": 41.0 + step as f64 * 0.03,
            "reward": 0.004 + 0.002 * (0.5 * s).sin(),
        });
        let mut event = json!({"trial": LIVE_TRIAL, "episode": episode, "step": step});
        event
            .as_object_mut()
            .unwrap()
            .extend(telemetry.as_object().unwrap().clone());
        desk.publish("step", event);
        desk.report(json!({"step": step, "telemetry": telemetry}));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The status code of a request to the dashboard.
fn http_status(addr: std::net::SocketAddr, head: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    write!(
        s,
        "{head} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    // An event stream never ends: the status line is all this reads.
    let mut buf = [0u8; 512];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the connection closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer[9..12]).parse().unwrap()
}

fn text_of(b: &mut Browser, id: &str) -> String {
    b.eval(&format!("document.getElementById('{id}').textContent"))
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn live_step(b: &mut Browser) -> Option<u64> {
    text_of(b, "live-step").trim().parse().ok()
}

fn wait_desk(what: &str, cond: impl Fn() -> bool) {
    let until = std::time::Instant::now() + LIMIT;
    while !cond() {
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_dashboard_shows_the_study_and_stops_the_robot() {
    let Some(mut b) = Browser::launch_or_skip() else {
        return;
    };
    let desk = Desk::new();
    let study = Arc::new(FakeStudy::default());
    let operator = Operator::new(desk.clone(), study.clone());
    let dash = Dashboard::serve("127.0.0.1:0".parse().unwrap(), operator, new_token())
        .expect("serve the dashboard");
    let trial_loop = FakeTrialLoop::start(desk.clone());

    // Without the token the API refuses, the page itself loads.
    assert_eq!(http_status(dash.local_addr(), "GET /api/status"), 401);
    assert_eq!(http_status(dash.local_addr(), "GET /api/events"), 401);
    assert_eq!(http_status(dash.local_addr(), "POST /api/command"), 401);
    assert_eq!(http_status(dash.local_addr(), "GET /"), 200);

    b.navigate(&dash.url());

    // Live telemetry arrives: the step number grows.
    let mut first = None;
    b.wait_for(LIMIT, "a first live step", |b| {
        first = live_step(b);
        first.is_some()
    });
    let first = first.unwrap();
    b.wait_for(LIMIT, "the live step to grow", |b| {
        live_step(b).is_some_and(|n| n > first)
    });
    b.wait_for(LIMIT, "the roll chart to draw a line", |b| {
        b.eval("document.querySelectorAll('#chart-roll path').length") != json!(0)
    });
    assert_eq!(text_of(&mut b, "live-trial"), LIVE_TRIAL.to_string());

    // The history: every finished trial drawn, the unsafe one apart, the best-so-far line;
    // the table lists every trial, the unsafe one marked with its limit.
    b.wait_for(LIMIT, "the history chart", |b| {
        b.eval("document.querySelectorAll('#history .best-line').length") == json!(1)
    });
    let marks = b.eval(
        "['complete','pruned','unsafe','fail'].map(k => document.querySelectorAll('#history .mark-' + k).length)",
    );
    // The legend draws one of each kind; the trials the rest.
    assert_eq!(marks, json!([1 + 4, 1 + 1, 1 + 1, 1 + 1]), "history marks");
    assert_eq!(
        b.eval("document.querySelectorAll('#trials-body tr').length"),
        json!(8)
    );
    let unsafe_row =
        b.eval("[...document.querySelectorAll('#trials-body tr.unsafe')].map(r => r.textContent)");
    let unsafe_row = unsafe_row.as_array().unwrap();
    assert_eq!(unsafe_row.len(), 1);
    assert!(
        unsafe_row[0].as_str().unwrap().contains("max_roll_deg"),
        "{unsafe_row:?}"
    );
    assert_ne!(
        b.eval("document.querySelectorAll('#parallel path').length"),
        json!(0),
        "parallel coordinates"
    );
    assert_ne!(
        b.eval("document.querySelectorAll('#curves path').length"),
        json!(0),
        "intermediate curves"
    );

    // The space bar types in a text field, it does not stop the robot there.
    b.click("#fail-note");
    b.eval("document.getElementById('fail-trial').value = '3'; document.getElementById('fail-unsafe').checked = true;");
    b.press_space();
    assert_eq!(
        b.eval("document.getElementById('fail-note').value"),
        json!(" ")
    );
    b.eval("document.getElementById('fail-note').value = 'scraped a leg';");
    b.click("#fail-submit");
    wait_desk("the fail verdict", || {
        !study.verdicts.lock().unwrap().is_empty()
    });
    {
        let verdicts = study.verdicts.lock().unwrap();
        let (trial, unsafe_, note, by) = &verdicts[0];
        assert_eq!(
            (*trial, *unsafe_, note.as_deref()),
            (3, true, Some("scraped a leg"))
        );
        assert!(by.starts_with("dashboard ("), "{by}");
    }
    assert!(!desk.stopped(), "space in a text field stopped the robot");
    b.wait_for(LIMIT, "the fail answer", |b| {
        text_of(b, "message").contains("trial 3 recorded FAIL")
    });

    // The enqueue box reaches the study.
    b.click("#enqueue-params");
    b.eval(r#"document.getElementById('enqueue-params').value = '{"kp": 33, "gait": "walk"}'"#);
    b.click("#enqueue-submit");
    wait_desk("the enqueue", || !study.enqueued.lock().unwrap().is_empty());
    assert_eq!(
        Value::Object(study.enqueued.lock().unwrap()[0].clone()),
        json!({"kp": 33, "gait": "walk"})
    );
    b.wait_for(LIMIT, "the enqueue answer", |b| {
        text_of(b, "message").starts_with("enqueue: enqueued")
    });

    // The other buttons: pause, resume, pause now, skip; go is refused in this run, and the
    // page says so.
    b.click("#pause");
    wait_desk("the pause", || desk.paused());
    b.click("#resume");
    wait_desk("the resume", || !desk.paused());
    b.click("#pause-now");
    wait_desk("the pause now", || {
        trial_loop.taken().iter().any(|(a, _)| *a == "pause")
    });
    b.click("#resume");
    wait_desk("the resume", || !desk.paused());
    b.click("#skip");
    wait_desk("the skip", || {
        trial_loop.taken().iter().any(|(a, _)| *a == "skip")
    });
    assert!(
        trial_loop
            .taken()
            .iter()
            .all(|(_, by)| by.starts_with("dashboard (")),
        "{:?}",
        trial_loop.taken()
    );
    b.click("#go");
    b.wait_for(LIMIT, "go's refusal", |b| {
        text_of(b, "message").starts_with("go: this run does not wait")
    });
    assert_eq!(
        b.eval("document.getElementById('message').className"),
        json!("err")
    );

    // STOP, with a real mouse click.
    b.click("#stop");
    wait_desk("the stop", || desk.stopped());
    wait_desk("the trial loop to take the stop", || {
        !trial_loop.stops().is_empty()
    });
    let by = trial_loop.stops()[0].clone();
    assert!(
        by.starts_with("dashboard (127.0.0.1:"),
        "stop recorded as by {by}"
    );
    b.wait_for(LIMIT, "the stop's answer", |b| {
        let m = text_of(b, "message");
        m.starts_with("stop: ") && m.contains("release")
    });
    assert_eq!(
        b.eval("document.getElementById('message').className"),
        json!("ok")
    );
    b.wait_for(LIMIT, "the header to show the stop", |b| {
        text_of(b, "chip-flags").contains("STOPPED") && text_of(b, "robot-state") == "EStop"
    });

    // Release: the (fake) trial loop acknowledges.
    b.click("#release");
    wait_desk("the release", || !desk.stopped());
    b.wait_for(LIMIT, "the release's answer", |b| {
        text_of(b, "message").starts_with("release: released")
    });

    // The space bar is STOP too, even with the focus on another button (which it must not
    // press).
    b.eval("document.getElementById('release').focus()");
    b.press_space();
    wait_desk("the stop by space bar", || desk.stopped());
    wait_desk("the trial loop to take it", || {
        trial_loop.stops().len() == 2
    });
    assert!(trial_loop.stops()[1].starts_with("dashboard ("));
    b.wait_for(LIMIT, "the stop's answer", |b| {
        text_of(b, "message").starts_with("stop: ")
    });
    assert!(
        desk.stopped(),
        "the space bar pressed the focused release button"
    );

    // Released again, for a picture of a running study.
    b.click("#release");
    wait_desk("the second release", || !desk.stopped());
    b.wait_for(LIMIT, "the release's answer", |b| {
        text_of(b, "message").starts_with("release: released")
    });
    let after = live_step(&mut b).unwrap_or(0);
    b.wait_for(LIMIT, "live steps after the release", |b| {
        live_step(b).is_some_and(|n| n > after + 40)
    });

    let errors = b.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");

    if let Some(path) = std::env::var_os("GAITTUNE_SCREENSHOT") {
        b.eval("window.scrollTo(0, 0)");
        b.screenshot(std::path::Path::new(&path));
    }
    if let Some(path) = std::env::var_os("GAITTUNE_SCREENSHOT_FULL") {
        b.screenshot_full(std::path::Path::new(&path));
    }
    drop(b);
    drop(trial_loop);
    drop(dash);
}
