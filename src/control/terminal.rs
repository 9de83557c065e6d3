//! Progress in the terminal while a study runs: on a terminal, a live status line at the
//! bottom (position in the study, the trial's episode and step, best so far, ETA, what the
//! daemon waits for and for how long), redrawn a few times a second; when standard output is
//! piped, plain lines instead, one when a wait has lasted a while and then one a minute, so
//! a log never goes quiet for as long as a robot takes to reset.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::desk::{unix_now, Desk};
use crate::console;

/// How often the terminal's line is redrawn.
const REDRAW: Duration = Duration::from_millis(250);
/// A wait this long is said in a plain line (piped output).
const FIRST_NOTE: f64 = 10.0;
/// Then once per this long.
const NOTE_EVERY: f64 = 60.0;

/// The progress reporter of a run; stops (and erases its line) when dropped.
pub struct StatusLine {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    live: bool,
}

impl StatusLine {
    /// Starts reporting the desk's status: a live line when standard output is a terminal,
    /// plain lines about long waits otherwise. `max_steps` is an episode's length.
    pub fn start(desk: &Desk, max_steps: u32) -> std::io::Result<StatusLine> {
        let live = std::io::stdout().is_terminal();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (desk, stop) = (desk.clone(), stop.clone());
            std::thread::Builder::new()
                .name("status-line".into())
                .spawn(move || report(&desk, &stop, live, max_steps))?
        };
        Ok(StatusLine {
            stop,
            thread: Some(thread),
            live,
        })
    }
}

impl Drop for StatusLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if self.live {
            console::set_status_line(None);
        }
    }
}

fn report(desk: &Desk, stop: &AtomicBool, live: bool, max_steps: u32) {
    let mut eta = Eta::default();
    let mut noted: Option<(String, f64)> = None;
    while !stop.load(Ordering::SeqCst) {
        let status = desk.status();
        let now = unix_now();
        eta.observe(finished(&status), Instant::now());
        if live {
            console::set_status_line(Some(render(&status, &eta, now, max_steps)));
        } else if let Some((what, waited)) = waiting(&status, now) {
            let last = noted
                .as_ref()
                .filter(|(w, _)| *w == what)
                .map(|(_, at)| *at);
            let due = match last {
                None => waited >= FIRST_NOTE,
                Some(at) => waited - at >= NOTE_EVERY,
            };
            if due {
                outln!("still waiting for {what} ({})", human(waited));
                noted = Some((what, waited));
            }
        }
        std::thread::sleep(REDRAW);
    }
}

fn finished(status: &Value) -> u64 {
    let c = &status["counts"];
    ["complete", "pruned", "fail"]
        .iter()
        .filter_map(|k| c[*k].as_u64())
        .sum()
}

/// What the daemon waits for and for how long (seconds), if it waits.
fn waiting(status: &Value, now: f64) -> Option<(String, f64)> {
    let what = status["waiting_for"].as_str()?;
    let since = status["waiting_since"].as_f64().unwrap_or(now);
    Some((what.to_string(), (now - since).max(0.0)))
}

/// Estimates the time left from the pace of the trials finished while we watched.
#[derive(Default)]
struct Eta {
    first: Option<(u64, Instant)>,
    last: Option<(u64, Instant)>,
}

impl Eta {
    fn observe(&mut self, finished: u64, now: Instant) {
        match self.first {
            None => self.first = Some((finished, now)),
            Some(_) if !matches!(self.last, Some((n, _)) if n == finished) => {
                self.last = Some((finished, now))
            }
            Some(_) => {}
        }
    }

    fn left(&self, size: u64) -> Option<Duration> {
        let ((n0, t0), (n1, t1)) = (self.first?, self.last?);
        let done = n1.checked_sub(n0).filter(|&d| d > 0)?;
        let per_trial = t1.duration_since(t0).as_secs_f64() / done as f64;
        Some(Duration::from_secs_f64(
            per_trial * size.saturating_sub(n1) as f64,
        ))
    }
}

fn render(status: &Value, eta: &Eta, now: f64, max_steps: u32) -> String {
    let size = status["size"].as_u64().unwrap_or(0);
    let done = finished(status);
    let mut parts = vec![format!("[{done}/{size}]")];
    if let Some(trial) = status["trial"].as_u64() {
        let mut t = format!("trial {trial}");
        if let Some(e) = status["episode"].as_u64() {
            t.push_str(&format!(" ep {e}"));
        }
        if let Some(s) = status["step"].as_u64() {
            t.push_str(&format!(" step {s}/{max_steps}"));
        }
        parts.push(t);
    }
    if let Some(v) = status["best"]["value"].as_f64() {
        parts.push(format!(
            "best {v:.4} (#{})",
            status["best"]["trial"].as_u64().unwrap_or(0)
        ));
    }
    if let Some(left) = eta.left(size) {
        parts.push(format!("ETA {}", human(left.as_secs_f64())));
    }
    if status["stopped_by_operator"] == true {
        parts.push("STOPPED by the operator".into());
    } else if status["paused"] == true {
        parts.push("paused".into());
    }
    if let Some((what, waited)) = waiting(status, now) {
        parts.push(format!("waiting for {what} {}", human(waited)));
    }
    parts.join(" · ")
}

/// `75.0` → `1m15s`.
fn human(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_line_says_where_the_study_is_and_what_it_waits_for() {
        let mut eta = Eta::default();
        let t0 = Instant::now();
        eta.observe(2, t0);
        eta.observe(4, t0 + Duration::from_secs(20));
        let status = json!({
            "size": 10, "counts": {"complete": 3, "pruned": 1, "fail": 0},
            "trial": 5, "episode": 0, "step": 120,
            "best": {"trial": 2, "value": 1.5},
            "waiting_for": "operator go", "waiting_since": 100.0,
        });
        let line = render(&status, &eta, 175.0, 500);
        assert_eq!(
            line,
            "[4/10] · trial 5 ep 0 step 120/500 · best 1.5000 (#2) · ETA 1m00s · waiting for operator go 1m15s"
        );
        assert_eq!(human(7300.0), "2h01m");
    }
}
