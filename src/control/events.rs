//! `--events FILE`: every event the desk publishes (trials, episodes, steps, the robot's
//! state, what the daemon waits for, operators' commands) as JSON lines, for people who feed
//! their own tools. Written from a thread of its own, flushed after every burst.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::thread::JoinHandle;

use tokio::sync::broadcast::error::RecvError;

use super::desk::Desk;

/// The event that ends the log's thread (published when the log is dropped).
const END: &str = "run_ended";

/// A JSON-lines file of the desk's events, written until dropped.
pub struct EventLog {
    desk: Desk,
    thread: Option<JoinHandle<()>>,
}

impl EventLog {
    /// Creates (truncates) `path` and writes every event published from now on to it.
    pub fn start(path: &Path, desk: &Desk) -> io::Result<EventLog> {
        let mut out = BufWriter::new(File::create(path)?);
        let mut rx = desk.events();
        let thread = std::thread::Builder::new()
            .name("event-log".into())
            .spawn(move || loop {
                let line = match rx.blocking_recv() {
                    Ok(line) => line,
                    Err(RecvError::Lagged(n)) => {
                        format!("{{\"event\":\"lagged\",\"missed\":{n}}}").into()
                    }
                    Err(RecvError::Closed) => break,
                };
                let end = line.contains(&format!("\"event\":\"{END}\""));
                if writeln!(out, "{line}").is_err() {
                    break;
                }
                if end || rx.is_empty() {
                    let _ = out.flush();
                }
                if end {
                    break;
                }
            })?;
        Ok(EventLog {
            desk: desk.clone(),
            thread: Some(thread),
        })
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.desk.publish(END, serde_json::json!({}));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn every_event_lands_on_its_own_line() {
        let path =
            std::env::temp_dir().join(format!("gaittune-events-{}.jsonl", std::process::id()));
        let desk = Desk::new();
        let log = EventLog::start(&path, &desk).unwrap();
        for step in 0..100 {
            desk.publish("step", json!({ "step": step }));
        }
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let events: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events.len(), 101);
        assert_eq!(events[42]["step"], 42);
        assert_eq!(events[100]["event"], END);
        let _ = std::fs::remove_file(path);
    }
}
