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
//!   binary; skipped if it is not built: `cargo build --release`).
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
use std::sync::Arc;
use std::time::{Duration, Instant};

use firmware_protocol::{decode, encode, FrameAccumulator, HostMsg, RobotMsg, Step, MAX_FRAME};
use gaittune::control::commands::{Operator, StudyActions};
use gaittune::control::desk::Desk;
use gaittune::control::global_slot;
use gaittune::control::socket::ControlSocket;
use gaittune::robot::{LinkSettings, Port, RobotLink};
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

/// The firmware's end of the pty: writes telemetry at 50 Hz from one thread, and reports
/// each EStop it reads.
struct Firmware {
    estops: std::sync::mpsc::Receiver<Instant>,
    stop: Arc<AtomicBool>,
}

impl Firmware {
    fn start(master: File) -> Firmware {
        let (tx, estops) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let mut writer = master.try_clone().expect("clone the pty");
        let mut reader = master;
        let streaming = stop.clone();
        std::thread::spawn(move || {
            let mut wire = [0u8; MAX_FRAME];
            let mut i = 0u32;
            while !streaming.load(Ordering::Relaxed) {
                let step = Step {
                    timestamp_us: i.wrapping_mul(20_000),
                    trial: 1,
                    episode: 0,
                    step: i,
                    reward: 0.1,
                    roll: 0.01,
                    pitch: 0.0,
                    body_height: 0.25,
                    max_joint_temp: 40.0,
                    faults: 0,
                };
                let n = encode(i as u16, &RobotMsg::Step(step), &mut wire).unwrap();
                if writer.write_all(&wire[..n]).is_err() {
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
        Firmware { estops, stop }
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
    fn print(&mut self) {
        self.latencies.sort();
        let l = &self.latencies;
        let pct = |p: f64| l[((l.len() as f64 - 1.0) * p).round() as usize];
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let p99 = pct(0.99);
        println!(
            "  {:<8} n={:<4} p50 {:>7.3} ms   p99 {:>7.3} ms   max {:>7.3} ms   target p99 < {} ms: {}",
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

    let mut results = vec![Summary {
        name: "socket",
        latencies: Vec::with_capacity(stops),
    }];
    for _ in 0..stops {
        firmware.drain();
        desk.release();
        desk.take_disruptions();
        let sent = Instant::now();
        stop_over_socket(&path);
        results[0]
            .latencies
            .push(firmware.next_estop().duration_since(sent));
        std::thread::sleep(Duration::from_millis(5));
    }

    let ctl = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/gaittune");
    if ctl.exists() {
        let mut summary = Summary {
            name: "ctl",
            latencies: Vec::with_capacity(stops),
        };
        for _ in 0..stops {
            firmware.drain();
            desk.release();
            desk.take_disruptions();
            let sent = Instant::now();
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
            summary
                .latencies
                .push(firmware.next_estop().duration_since(sent));
        }
        results.push(summary);
    } else {
        println!(
            "(ctl path skipped: {} not built; run `cargo build --release` first)",
            ctl.display()
        );
    }
    running.store(false, Ordering::Relaxed);
    let _ = trial_loop.join();
    global_slot().disarm();

    println!("operator STOP -> EStop frame on the wire (pty, telemetry streaming at 50 Hz):");
    for r in &mut results {
        r.print();
    }
}
