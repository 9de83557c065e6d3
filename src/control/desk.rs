//! The operator's desk: what the operator asked for (stop, release, pause, skip, go) and what
//! the daemon is doing (its status), shared between the control endpoints (the socket, later
//! the dashboard) and the trial loop. The endpoints write requests from their own threads;
//! the trial loop reads them at the points where it can act, and is woken when one arrives.
//! No I/O here.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use tokio::sync::{broadcast, watch};

/// Events kept for a client that joins late (the live view of the episode in flight).
const RECENT_EVENTS: usize = 2000;
/// Events buffered per subscriber before a slow one starts missing them.
const EVENT_BUFFER: usize = 8192;

/// A request that interrupts the trial in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disruption {
    /// EStop (already sent by the endpoint): re-queue the trial, wait for release.
    Stop {
        /// Who asked (e.g. `ctl (uid 1000, pid 4242)`).
        by: String,
    },
    /// Abort the trial in flight and record it PRUNED for the reason `operator`.
    Skip {
        /// Who asked.
        by: String,
    },
    /// Abort the episode, re-queue the trial, and pause.
    PauseNow {
        /// Who asked.
        by: String,
    },
}

impl Disruption {
    /// Who asked for it.
    pub fn by(&self) -> &str {
        match self {
            Disruption::Stop { by } | Disruption::Skip { by } | Disruption::PauseNow { by } => by,
        }
    }

    /// The operator's action, as recorded (`stop`, `skip`, `pause`).
    pub fn action(&self) -> &'static str {
        match self {
            Disruption::Stop { .. } => "stop",
            Disruption::Skip { .. } => "skip",
            Disruption::PauseNow { .. } => "pause",
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Who stopped the robot, while the operator's stop holds.
    stopped_by: Option<String>,
    paused: bool,
    go_count: u64,
    releases_done: u64,
    /// Requests that interrupt a trial, in order; the trial loop takes them.
    disruptions: Vec<Disruption>,
    status: Map<String, Value>,
    recent: VecDeque<Arc<str>>,
}

/// The shared desk (cheap to clone).
#[derive(Clone)]
pub struct Desk {
    state: Arc<Mutex<State>>,
    version: Arc<watch::Sender<u64>>,
    events: broadcast::Sender<Arc<str>>,
}

/// Seconds since the Unix epoch, for event timestamps.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Default for Desk {
    fn default() -> Self {
        Self::new()
    }
}

impl Desk {
    /// An empty desk: nothing asked, an empty status.
    pub fn new() -> Desk {
        Desk {
            state: Arc::default(),
            version: Arc::new(watch::channel(0).0),
            events: broadcast::channel(EVENT_BUFFER).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// A receiver that wakes the trial loop on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// The operator stops the robot (the endpoint writes EStop right after). Returns whether
    /// it was already stopped.
    pub fn stop(&self, by: &str) -> bool {
        let was = {
            let mut s = self.lock();
            let was = s.stopped_by.replace(by.into()).is_some();
            s.disruptions.push(Disruption::Stop { by: by.into() });
            was
        };
        self.changed();
        was
    }

    /// The operator released the stop. Returns whether the robot was stopped.
    pub fn release(&self) -> bool {
        let was = self.lock().stopped_by.take().is_some();
        self.changed();
        was
    }

    /// Whether the operator's stop holds.
    pub fn stopped(&self) -> bool {
        self.lock().stopped_by.is_some()
    }

    /// Who stopped the robot, while the operator's stop holds.
    pub fn stopped_by(&self) -> Option<String> {
        self.lock().stopped_by.clone()
    }

    /// Pause after the trial in flight (`now`: abort it and re-queue it first).
    pub fn pause(&self, now: bool, by: &str) {
        {
            let mut s = self.lock();
            s.paused = true;
            if now {
                s.disruptions.push(Disruption::PauseNow { by: by.into() });
            }
        }
        self.changed();
    }

    /// Resume after a pause. Returns whether it was paused.
    pub fn resume(&self) -> bool {
        let was = std::mem::replace(&mut self.lock().paused, false);
        self.changed();
        was
    }

    /// Whether the operator paused the study.
    pub fn paused(&self) -> bool {
        self.lock().paused
    }

    /// Skip the trial in flight.
    pub fn skip(&self, by: &str) {
        self.lock()
            .disruptions
            .push(Disruption::Skip { by: by.into() });
        self.changed();
    }

    /// The operator's go for the next episode.
    pub fn go(&self) {
        self.lock().go_count += 1;
        self.changed();
    }

    /// How many gos the operator has given.
    pub fn go_count(&self) -> u64 {
        self.lock().go_count
    }

    /// Takes the requests that interrupt a trial, oldest first.
    pub fn take_disruptions(&self) -> Vec<Disruption> {
        std::mem::take(&mut self.lock().disruptions)
    }

    /// The trial loop has sent ClearEStop after a release and the robot acknowledged it.
    pub fn release_done(&self) {
        self.lock().releases_done += 1;
    }

    /// How many releases the trial loop has carried out.
    pub fn releases_done(&self) -> u64 {
        self.lock().releases_done
    }

    /// Waits (blocking, for an endpoint's thread) until `done` holds or `limit` passes;
    /// returns whether it held.
    pub fn wait_until(&self, limit: Duration, done: impl Fn(&Desk) -> bool) -> bool {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if done(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        done(self)
    }

    /// Publishes an event to every subscriber (dashboards, the `--events` file). `event`
    /// names it; `fields` (an object) says the rest; a timestamp `t` (Unix seconds) is added.
    pub fn publish(&self, event: &str, fields: Value) {
        let mut map = Map::new();
        map.insert("t".into(), json!(unix_now()));
        map.insert("event".into(), json!(event));
        if let Value::Object(fields) = fields {
            map.extend(fields);
        }
        let line: Arc<str> = Value::Object(map).to_string().into();
        if event == "step" {
            tracing::trace!(target: "gaittune::events", "{line}");
        } else {
            tracing::debug!(target: "gaittune::events", "{line}");
        }
        // Sent under the lock, so a client joining never sees an event twice or misses one.
        let mut s = self.lock();
        if event == "episode_started" {
            s.recent.clear();
        }
        if s.recent.len() == RECENT_EVENTS {
            s.recent.pop_front();
        }
        s.recent.push_back(line.clone());
        let _ = self.events.send(line);
    }

    /// The events published from now on, each a JSON object serialised on one line.
    pub fn events(&self) -> broadcast::Receiver<Arc<str>> {
        self.events.subscribe()
    }

    /// The events already published since the episode in flight began (or the last
    /// 2000), oldest first, and a receiver for the ones after them: what a
    /// client joining late needs for the live view.
    pub fn recent_and_subscribe(&self) -> (Vec<Arc<str>>, broadcast::Receiver<Arc<str>>) {
        let s = self.lock();
        let rx = self.events.subscribe();
        (s.recent.iter().cloned().collect(), rx)
    }

    /// Sets status fields (merged into the status).
    pub fn report(&self, fields: Value) {
        if let Value::Object(map) = fields {
            self.lock().status.extend(map);
        }
    }

    /// The status: what the daemon reported, plus the desk's own flags.
    pub fn status(&self) -> Value {
        let s = self.lock();
        let mut status = s.status.clone();
        status.insert("stopped_by_operator".into(), json!(s.stopped_by.is_some()));
        status.insert("stopped_by".into(), json!(s.stopped_by));
        status.insert("paused".into(), json!(s.paused));
        Value::Object(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_kept_in_order_and_wake_the_loop() {
        let desk = Desk::new();
        let mut rx = desk.subscribe();
        assert!(!rx.has_changed().unwrap());
        assert!(!desk.stop("ctl"));
        desk.skip("dashboard");
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        assert_eq!(
            desk.take_disruptions(),
            vec![
                Disruption::Stop { by: "ctl".into() },
                Disruption::Skip {
                    by: "dashboard".into()
                }
            ]
        );
        assert!(desk.take_disruptions().is_empty());
        assert!(desk.stopped() && desk.release() && !desk.stopped());
        desk.pause(true, "ctl");
        assert!(desk.paused());
        assert_eq!(desk.take_disruptions().len(), 1);
        assert!(desk.resume() && !desk.paused());
        desk.go();
        assert_eq!(desk.go_count(), 1);
        desk.report(json!({"trial": 3}));
        desk.report(json!({"waiting_for": "Ready"}));
        let s = desk.status();
        assert_eq!(
            (s["trial"].clone(), s["waiting_for"].clone()),
            (json!(3), json!("Ready"))
        );
        assert!(rx.has_changed().unwrap());
    }
}
