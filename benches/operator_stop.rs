//! Benchmark: the operator's STOP → the EStop frame on the wire, over a real pseudo-terminal,
//! through the daemon's own pieces: the robot link (its reader task busy with a 50 Hz
//! telemetry stream the bench plays as the firmware), the operator's desk, the control
//! socket and its client.
//!
//! Measured per stop, from the moment the stop is sent until the EStop frame is read on the
//! firmware's side of the pty:
//! - `socket`: a client writes `{"cmd":"stop"}` on the control socket (what `gaittune ctl
//!   stop` does once started);
//! - `ctl`: the whole `gaittune ctl stop` command, process start included (the release
//!   binary; skipped if it is not built: `cargo build --release`);
//! - `dashboard`: the dashboard's STOP button's request, `POST /api/command` on a fresh
//!   connection, as the page sends it.
//!
//! Then the safety envelope's own EStop (an unsafe Step in → EStop out) side by side, first
//! with no dashboard client, then with a browser-like client streaming the live events while
//! 500 step events a second are published (ten times a
//! 50 Hz robot's telemetry): p50 / p99 of both and their ratio.
//!
//! Prints p50 / p99 / max per path and the target (p99 < 20 ms). Not a test.
//!
//! ```text
//! cargo bench --bench operator_stop [-- STOPS]
//! ```

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firmware_protocol::{decode, encode, FrameAccumulator, HostMsg, RobotMsg, Step, MAX_FRAME};
use gaittune::control::commands::{Operator, StudyActions};
use gaittune::control::dashboard::{new_token, Dashboard};
use gaittune::control::desk::Desk;
use gaittune::control::global_slot;
use gaittune::control::socket::ControlSocket;
use gaittune::robot::{LinkSettings, Port, RobotLink};
use gaittune::safety::SafetyEnvelope;
use serde_json::{Map, Value};

/// The operator's STOP must reach the wire within this, at the 99th percentile.
const TARGET_P99: Duration = Duration::from_millis(20);

struct NoStudy;
impl StudyActions for NoStudy {
    fn fail(&self, _: u64, _: bool, _: Option<&str>, _: &str) -> Result<String, String> {
        Err("no study in this benchmark".into())
    }
    fn enqueue(&self, _: &Map<String, Value>, _: &str) -> Result<String, String> {
        Err("no study in this benchmark".into())
    }
    fn trials(&self) -> Result<Value, String> {
        Ok(Value::Array(Vec::new()))
    }
}

/// A Step frame; `roll` in radians (1.0 is far outside the default 30° envelope).
fn step_frame(i: u32, roll: f32) -> Vec<u8> {
    let step = Step {
        timestamp_us: i.wrapping_mul(20_000),
        trial: 1,
        episode: 0,
        step: i,
        reward: 0.1,
        roll,
        pitch: 0.0,
        body_height: 0.25,
        max_joint_temp: 40.0,
        faults: 0,
    };
    let mut wire = [0u8; MAX_FRAME];
    let n = encode(i as u16, &RobotMsg::Step(step), &mut wire).unwrap();
    wire[..n].to_vec()
}

/// The firmware's end of the pty: writes telemetry at 50 Hz from one thread, and reports
/// each EStop it reads.
struct Firmware {
    estops: std::sync::mpsc::Receiver<Instant>,
    stop: Arc<AtomicBool>,
    writer: Arc<Mutex<File>>,
}

impl Firmware {
    fn start(master: File) -> Firmware {
        let (tx, estops) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = Arc::new(Mutex::new(master.try_clone().expect("clone the pty")));
        let mut reader = master;
        let streaming = stop.clone();
        let telemetry = writer.clone();
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !streaming.load(Ordering::Relaxed) {
                let frame = step_frame(i, 0.01);
                if telemetry.lock().unwrap().write_all(&frame).is_err() {
                    return;
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        std::thread::spawn(move || {
            let mut acc = FrameAccumulator::new();
            let mut buf = [0u8; 256];
            loop {
                let Ok(got) = reader.read(&mut buf) else {
                    return;
                };
                let now = Instant::now();
                for &b in &buf[..got] {
                    if let Some(Ok(frame)) = acc.push(b) {
                        if let Ok(f) = decode::<HostMsg>(frame) {
                            if f.msg == HostMsg::EStop && tx.send(now).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Firmware {
            estops,
            stop,
            writer,
        }
    }

    /// Writes an unsafe Step; when it was written.
    fn trip(&self, i: u32) -> Instant {
        let frame = step_frame(i, 1.0);
        let mut w = self.writer.lock().unwrap();
        let at = Instant::now();
        w.write_all(&frame).unwrap();
        at
    }

    /// Waits for the next EStop on the wire; its arrival time.
    fn next_estop(&self) -> Instant {
        self.estops
            .recv_timeout(Duration::from_secs(5))
            .expect("no EStop reached the wire within 5 s")
    }

    fn drain(&self) {
        while self.estops.try_recv().is_ok() {}
    }
}

impl Drop for Firmware {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The dashboard's STOP: `POST /api/command` on a fresh connection; waits for the answer.
fn stop_over_http(board: &Dashboard, token: &str) {
    let body = "{\"cmd\":\"stop\"}";
    let mut s = std::net::TcpStream::connect(board.local_addr()).expect("connect");
    s.set_nodelay(true).unwrap();
    let request = format!(
        "POST /api/command HTTP/1.1\r\nHost: {}\r\nx-gaittune-token: {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        board.local_addr(),
        body.len()
    );
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// A browser-like client of the dashboard's live events: reads the stream until told to stop.
fn stream_events(
    board: &Dashboard,
    token: &str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    let addr = board.local_addr();
    let token = token.to_string();
    std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        let request = format!(
            "GET /api/events?token={token} HTTP/1.1\r\nHost: {addr}\r\naccept: text/event-stream\r\n\r\n"
        );
        s.write_all(request.as_bytes()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 65536];
        let mut bytes = 0u64;
        while !stop.load(Ordering::Relaxed) {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => bytes += n as u64,
                Err(_) => {}
            }
        }
        bytes
    })
}

/// The safety envelope's EStop: `trips` unsafe Steps, each timed to its EStop on the wire.
fn envelope_trips(firmware: &Firmware, trips: usize, name: &'static str) -> Summary {
    let mut summary = Summary {
        name,
        latencies: Vec::with_capacity(trips),
    };
    for i in 0..trips {
        firmware.drain();
        let sent = firmware.trip(1_000_000 + i as u32);
        summary
            .latencies
            .push(firmware.next_estop().duration_since(sent));
        std::thread::sleep(Duration::from_millis(2));
    }
    summary
}

/// `stops` operator stops through `stop`, each timed from its start to its EStop on the
/// wire; the desk is released between them, and `gap` waited after each.
fn time_stops(
    name: &'static str,
    stops: usize,
    firmware: &Firmware,
    desk: &Desk,
    gap: Duration,
    mut stop: impl FnMut(),
) -> Summary {
    let mut summary = Summary {
        name,
        latencies: Vec::with_capacity(stops),
    };
    for _ in 0..stops {
        firmware.drain();
        desk.release();
        desk.take_disruptions();
        let sent = Instant::now();
        stop();
        summary
            .latencies
            .push(firmware.next_estop().duration_since(sent));
        std::thread::sleep(gap);
    }
    summary
}

fn stop_over_socket(path: &Path) {
    let mut s = UnixStream::connect(path).expect("connect to the control socket");
    s.write_all(b"{\"cmd\":\"stop\"}\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
}

struct Summary {
    name: &'static str,
    latencies: Vec<Duration>,
}

impl Summary {
    fn percentiles(&mut self) -> (Duration, Duration) {
        self.latencies.sort();
        let l = &self.latencies;
        let pct = |p: f64| l[((l.len() as f64 - 1.0) * p).round() as usize];
        (pct(0.5), pct(0.99))
    }

    fn print(&mut self) {
        self.latencies.sort();
        let l = &self.latencies;
        let pct = |p: f64| l[((l.len() as f64 - 1.0) * p).round() as usize];
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let p99 = pct(0.99);
        println!(
            "  {:<9} n={:<4} p50 {:>7.3} ms   p99 {:>7.3} ms   max {:>7.3} ms   target p99 < {} ms: {}",
            self.name,
            l.len(),
            ms(pct(0.5)),
            ms(p99),
            ms(*l.last().unwrap()),
            TARGET_P99.as_millis(),
            if p99 < TARGET_P99 { "met" } else { "MISSED" }
        );
    }
}

fn main() {
    let stops: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let device = nix::unistd::ttyname(pty.slave.as_fd())
        .expect("ttyname")
        .to_string_lossy()
        .into_owned();
    let firmware = Firmware::start(File::from(pty.master));
    let _slave = pty.slave;

    // The daemon's side: a runtime thread taking the telemetry in, as the trial loop does.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut link = {
        let _guard = rt.enter();
        let port = Port::open(&device, 115_200).expect("open pty");
        RobotLink::from_port(&device, port, LinkSettings::default()).expect("link")
    };
    global_slot().arm(link.sender());
    let envelope = SafetyEnvelope::default();
    link.set_step_guard(Box::new(move |s| envelope.check(s).is_some()));
    let running = Arc::new(AtomicBool::new(true));
    let loop_running = running.clone();
    let trial_loop = std::thread::spawn(move || {
        rt.block_on(async move {
            while loop_running.load(Ordering::Relaxed) {
                let _ = tokio::time::timeout(
                    Duration::from_millis(100),
                    link.listen(Duration::from_millis(50)),
                )
                .await;
            }
        })
    });

    let desk = Desk::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.sock");
    let _socket = ControlSocket::serve(&path, Operator::new(desk.clone(), Arc::new(NoStudy)))
        .expect("serve the control socket");
    std::thread::sleep(Duration::from_millis(100));

    let gap = Duration::from_millis(5);
    let mut results = vec![time_stops("socket", stops, &firmware, &desk, gap, || {
        stop_over_socket(&path)
    })];

    let ctl = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/gaittune");
    if ctl.exists() {
        // The process start is gap enough.
        results.push(time_stops(
            "ctl",
            stops,
            &firmware,
            &desk,
            Duration::ZERO,
            || {
                let out = std::process::Command::new(&ctl)
                    .args(["ctl", "--control"])
                    .arg(&path)
                    .arg("stop")
                    .output()
                    .expect("run gaittune ctl");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            },
        ));
    } else {
        println!(
            "(ctl path skipped: {} not built; run `cargo build --release` first)",
            ctl.display()
        );
    }
    let token = new_token();
    let board = Dashboard::serve(
        "127.0.0.1:0".parse().unwrap(),
        Operator::new(desk.clone(), Arc::new(NoStudy)),
        token.clone(),
    )
    .expect("serve the dashboard");
    results.push(time_stops(
        "dashboard",
        stops,
        &firmware,
        &desk,
        gap,
        || stop_over_http(&board, &token),
    ));

    // The envelope's EStop, without and with the dashboard streaming.
    let trips = stops * 5;
    let mut quiet = envelope_trips(&firmware, trips, "quiet");
    let streaming = Arc::new(AtomicBool::new(false));
    let client_stop = Arc::new(AtomicBool::new(false));
    let client = stream_events(&board, &token, client_stop.clone());
    let publisher = {
        let (desk, streaming) = (desk.clone(), streaming.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !streaming.load(Ordering::Relaxed) {
                desk.publish(
                    "step",
                    serde_json::json!({ "trial": 1, "episode": 0, "step": i, "reward": 0.1,
                        "roll": 1.2, "pitch": -0.4, "height": 0.27, "temp": 41.0 }),
                );
                i += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            i
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let mut busy = envelope_trips(&firmware, trips, "streaming");
    streaming.store(true, Ordering::Relaxed);
    let published = publisher.join().unwrap();
    client_stop.store(true, Ordering::Relaxed);
    let streamed = client.join().unwrap();

    running.store(false, Ordering::Relaxed);
    let _ = trial_loop.join();
    global_slot().disarm();
    drop(board);

    println!("operator STOP -> EStop frame on the wire (pty, telemetry streaming at 50 Hz):");
    for r in &mut results {
        r.print();
    }
    println!(
        "safety envelope: unsafe Step -> EStop, without and with a dashboard client streaming ({published} step events published, {} KiB streamed):",
        streamed / 1024
    );
    let (q50, q99) = quiet.percentiles();
    let (b50, b99) = busy.percentiles();
    println!(
        "  quiet     p50 {:>7.3} ms   p99 {:>7.3} ms",
        q50.as_secs_f64() * 1e3,
        q99.as_secs_f64() * 1e3
    );
    println!(
        "  streaming p50 {:>7.3} ms   p99 {:>7.3} ms   ratio streaming/quiet: p50 {:.2}x  p99 {:.2}x",
        b50.as_secs_f64() * 1e3,
        b99.as_secs_f64() * 1e3,
        b50.as_secs_f64() / q50.as_secs_f64(),
        b99.as_secs_f64() / q99.as_secs_f64()
    );
}
