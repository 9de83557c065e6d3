//! Benchmark: latency from an unsafe Step frame arriving at the daemon's serial link to the
//! EStop frame written back to the device, over a real pseudo-terminal. Not a test: it
//! prints p50/p99/max and the target (p99 < 2 ms).
//!
//!     cargo bench --bench estop_latency [-- TRIPS]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use firmware_protocol::{decode, encode, FrameAccumulator, HostMsg, RobotMsg, Step, MAX_FRAME};
use gaittune::robot::{LinkSettings, Port, RobotLink};
use gaittune::safety::SafetyEnvelope;

fn main() {
    let trips: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2000);
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let path = nix::unistd::ttyname(pty.slave.as_fd()).expect("ttyname");
    let mut firmware = File::from(pty.master);
    let _slave = pty.slave;
    let device = path.to_string_lossy().into_owned();
    let port = Port::open(&device, 115_200).expect("open pty");
    let link = RobotLink::from_port(&device, port, LinkSettings::default()).expect("link");
    let envelope = SafetyEnvelope::default();
    link.set_step_guard(Box::new(move |s| envelope.check(s).is_some()));

    let mut acc = FrameAccumulator::new();
    let mut wire = [0u8; MAX_FRAME];
    let mut buf = [0u8; 256];
    let mut latencies = Vec::with_capacity(trips);
    // Let the link's opening delimiter arrive and be discarded.
    std::thread::sleep(Duration::from_millis(50));
    for i in 0..trips {
        let step = Step {
            timestamp_us: i as u32 * 20_000,
            trial: 1,
            episode: 0,
            step: i as u32,
            reward: 0.1,
            roll: 1.0, // 57°: far outside the default 30° envelope
            pitch: 0.0,
            body_height: 0.25,
            max_joint_temp: 40.0,
            faults: 0,
        };
        let n = encode(i as u16, &RobotMsg::Step(step), &mut wire).unwrap();
        let sent = Instant::now();
        firmware.write_all(&wire[..n]).unwrap();
        'wait: loop {
            let got = firmware.read(&mut buf).expect("read from the link");
            for &b in &buf[..got] {
                if let Some(Ok(frame)) = acc.push(b) {
                    if let Ok(f) = decode::<HostMsg>(frame) {
                        if f.msg == HostMsg::EStop {
                            latencies.push(sent.elapsed());
                            break 'wait;
                        }
                    }
                }
            }
        }
        // A gap between trips, as between real violations.
        std::thread::sleep(Duration::from_micros(200));
    }
    drop(link);
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let p99 = pct(0.99);
    println!("EStop latency over {trips} trips on a pty (unsafe Step in -> EStop out):");
    println!(
        "  p50 {:.0} µs   p99 {:.0} µs   max {:.0} µs",
        us(pct(0.5)),
        us(p99),
        us(*latencies.last().unwrap())
    );
    println!(
        "  target p99 < 2000 µs: {}",
        if p99 < Duration::from_millis(2) {
            "met"
        } else {
            "MISSED"
        }
    );
}
