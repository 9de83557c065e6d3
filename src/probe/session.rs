//! A synchronous frame session for the probe: it writes exactly the frames (or bytes) it is
//! told to, with sequence numbers it controls, and records every robot frame with its arrival
//! time on one timeline that the checks inspect.
//!
//! Three threads share the port's writer: the caller's, the host-heartbeat thread (paused on
//! demand, e.g. to let the firmware's watchdog trip) and the signal handler's EStop
//! ([`Writer::estop`]). Each frame is allocated its sequence number and written under one
//! lock, so sequence order is write order (SPEC §7.2).

use crate::control::Interrupts;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use firmware_protocol::{
    decode, encode, DecodeError, FrameAccumulator, HostMsg, RobotMsg, RobotState, MAX_FRAME,
};

use crate::robot::Port;

/// Why the probe cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The operator interrupted the probe (Ctrl-C, SIGTERM).
    #[error("interrupted by the operator")]
    Interrupted,
    /// Reading from or writing to the device failed.
    #[error("the link to the robot failed: {0}")]
    Link(#[from] io::Error),
}

/// One robot frame as received.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// When its last byte was read.
    pub at: Instant,
    /// The message.
    pub msg: RobotMsg,
}

impl Received {
    /// The `ack_seq` of a response (Info, ParamInfo, ParamsApplied, Ack, Nack, Status).
    pub fn ack_seq(&self) -> Option<u16> {
        response_ack_seq(&self.msg)
    }
}

/// The `ack_seq` of a response message; `None` for unsolicited frames.
pub fn response_ack_seq(msg: &RobotMsg) -> Option<u16> {
    match *msg {
        RobotMsg::Info { ack_seq, .. }
        | RobotMsg::ParamInfo { ack_seq, .. }
        | RobotMsg::ParamsApplied { ack_seq, .. }
        | RobotMsg::Ack { ack_seq }
        | RobotMsg::Nack { ack_seq, .. } => Some(ack_seq),
        RobotMsg::Status(s) => Some(s.ack_seq),
        RobotMsg::Step(_)
        | RobotMsg::EpisodeEnd { .. }
        | RobotMsg::SafetyTrip { .. }
        | RobotMsg::Ready
        | RobotMsg::Heartbeat { .. } => None,
    }
}

/// A frame the probe wrote.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Its sequence number.
    pub seq: u16,
    /// When the write began (latencies are measured from here).
    pub at: Instant,
    /// The bytes on the wire (for a byte-identical retry).
    pub bytes: Vec<u8>,
}

/// What the reader thread passes on.
// Frames are the common case; boxing them would allocate per frame for nothing.
#[allow(clippy::large_enum_variant)]
enum Inbound {
    Frame(Received),
    Discarded(DecodeError),
    Closed(io::Error),
}

/// The write half of the port with the host's sequence counter: cheap to clone, usable from
/// any thread (the heartbeat thread, a signal handler, a guard's `Drop`).
#[derive(Clone)]
pub struct Writer {
    port: Arc<Mutex<Port>>,
    next_seq: Arc<AtomicU16>,
}

impl Writer {
    fn lock(&self) -> MutexGuard<'_, Port> {
        self.port.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Encodes `msg` with the next sequence number and writes it.
    pub fn send(&self, msg: &HostMsg) -> io::Result<Sent> {
        let mut port = self.lock();
        let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
        let bytes = frame_bytes(seq, msg);
        let at = Instant::now();
        port.write_all(&bytes)?;
        port.flush()?;
        Ok(Sent { seq, at, bytes })
    }

    /// Writes `bytes` as they are (a retry, corrupt bytes, garbage); returns when the write
    /// began.
    pub fn write_raw(&self, bytes: &[u8]) -> io::Result<Instant> {
        let mut port = self.lock();
        let at = Instant::now();
        port.write_all(bytes)?;
        port.flush()?;
        Ok(at)
    }

    /// Sends a host Heartbeat if `enabled` holds, deciding under the write lock so that a
    /// caller that clears `enabled` and then takes the lock knows no heartbeat follows.
    fn heartbeat_if(&self, enabled: &AtomicBool, host_time_ms: u32) -> io::Result<()> {
        let mut port = self.lock();
        if !enabled.load(Ordering::SeqCst) {
            return Ok(());
        }
        let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
        port.write_all(&frame_bytes(seq, &HostMsg::Heartbeat { host_time_ms }))?;
        port.flush()
    }

    /// Allocates a sequence number without writing anything (for hand-made frames).
    pub fn take_seq(&self) -> u16 {
        self.next_seq.fetch_add(1, Ordering::SeqCst)
    }

    /// Sends EStop; for the signal handler and guards, so it never panics.
    pub fn estop(&self) -> io::Result<Sent> {
        self.send(&HostMsg::EStop)
    }
}

impl crate::control::EmergencyStop for Writer {
    fn estop(&self) -> io::Result<()> {
        Writer::estop(self).map(|_| ())
    }
}

/// Encodes one host frame, delimiter included.
pub fn frame_bytes(seq: u16, msg: &HostMsg) -> Vec<u8> {
    let mut buf = [0u8; MAX_FRAME];
    let n = encode(seq, msg, &mut buf).expect("host messages built by the probe always fit");
    buf[..n].to_vec()
}

/// The host-heartbeat thread (SPEC §7.5): sends Heartbeat every `period` while enabled.
struct Heartbeats {
    enabled: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeats {
    fn start(writer: Writer, period: Duration, epoch: Instant) -> Self {
        let enabled = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let (en, st) = (enabled.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let slice = Duration::from_millis(5).min(period);
            let mut next = Instant::now() + period;
            while !st.load(Ordering::SeqCst) {
                std::thread::sleep(slice);
                if Instant::now() < next {
                    continue;
                }
                next = (next + period).max(Instant::now());
                let host_time_ms = epoch.elapsed().as_millis() as u32;
                if writer.heartbeat_if(&en, host_time_ms).is_err() {
                    return;
                }
            }
        });
        Self {
            enabled,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The probe's side of the link: a writer, a reader thread, optional host heartbeats, and
/// the timeline of robot frames received so far.
pub struct Session {
    writer: Writer,
    inbox: Receiver<Inbound>,
    frames: Vec<Received>,
    discarded: Vec<DecodeError>,
    closed: Option<String>,
    reader_stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    heartbeats: Option<Heartbeats>,
    interrupts: Interrupts,
    epoch: Instant,
}

impl Session {
    /// Opens `device` at `baud`, starts the reader thread and writes one 0x00 so stale bytes
    /// in the robot's buffer end as one discarded frame (SPEC §2.5). `interrupted` is polled
    /// by every wait.
    pub fn open(device: &str, baud: u32, interrupts: Interrupts) -> io::Result<Session> {
        let port = Port::open(device, baud)?;
        let mut read_half = port.try_clone()?;
        let writer = Writer {
            port: Arc::new(Mutex::new(port)),
            next_seq: Arc::new(AtomicU16::new(1)),
        };
        let (tx, inbox) = mpsc::channel();
        let reader_stop = Arc::new(AtomicBool::new(false));
        let stop = reader_stop.clone();
        let reader = std::thread::spawn(move || {
            let mut acc = FrameAccumulator::new();
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::SeqCst) {
                let n = match read_half.read_some(&mut buf) {
                    Ok(0) => {
                        let _ = tx.send(Inbound::Closed(io::ErrorKind::UnexpectedEof.into()));
                        return;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => continue,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let _ = tx.send(Inbound::Closed(e));
                        return;
                    }
                };
                let at = Instant::now();
                for &b in &buf[..n] {
                    let item = match acc.push(b) {
                        None => continue,
                        Some(Err(e)) => Inbound::Discarded(e),
                        Some(Ok(stuffed)) => match decode::<RobotMsg>(stuffed) {
                            Ok(f) => Inbound::Frame(Received { at, msg: f.msg }),
                            Err(e) => Inbound::Discarded(e),
                        },
                    };
                    if tx.send(item).is_err() {
                        return;
                    }
                }
            }
        });
        writer.write_raw(&[0])?;
        Ok(Session {
            writer,
            inbox,
            frames: Vec::new(),
            discarded: Vec::new(),
            closed: None,
            reader_stop,
            reader: Some(reader),
            heartbeats: None,
            interrupts,
            epoch: Instant::now(),
        })
    }

    /// A handle on the writer (for the signal handler and the final-EStop guard).
    pub fn writer(&self) -> Writer {
        self.writer.clone()
    }

    /// Starts host heartbeats every `period` (SPEC §7.5); they run until paused or the
    /// session ends.
    pub fn start_heartbeats(&mut self, period: Duration) {
        if self.heartbeats.is_none() {
            self.heartbeats = Some(Heartbeats::start(self.writer(), period, self.epoch));
        }
    }

    /// Stops sending host heartbeats; returns once no heartbeat write is in flight, so the
    /// next frame written is the last the robot hears until [`Session::resume_heartbeats`].
    pub fn pause_heartbeats(&mut self) {
        if let Some(h) = &self.heartbeats {
            h.enabled.store(false, Ordering::SeqCst);
            drop(self.writer.lock());
        }
    }

    /// Resumes host heartbeats after [`Session::pause_heartbeats`].
    pub fn resume_heartbeats(&mut self) {
        if let Some(h) = &self.heartbeats {
            h.enabled.store(true, Ordering::SeqCst);
        }
    }

    /// From now on waits ignore the operator's interrupt (for the final EStop, which must
    /// wait for its Ack even after Ctrl-C).
    pub fn ignore_interrupts(&mut self) {
        self.interrupts = Interrupts::never();
    }

    /// Sends a command (or heartbeat) with the next sequence number.
    pub fn send(&mut self, msg: &HostMsg) -> Result<Sent, SessionError> {
        Ok(self.writer.send(msg)?)
    }

    /// Writes `bytes` unchanged.
    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<Instant, SessionError> {
        Ok(self.writer.write_raw(bytes)?)
    }

    /// Resends a frame byte for byte (same seq, same CRC: a retry, SPEC §7.4).
    pub fn resend(&mut self, sent: &Sent) -> Result<Sent, SessionError> {
        let at = self.writer.write_raw(&sent.bytes)?;
        Ok(Sent {
            seq: sent.seq,
            at,
            bytes: sent.bytes.clone(),
        })
    }

    /// Allocates a sequence number for a hand-made frame.
    pub fn take_seq(&mut self) -> u16 {
        self.writer.take_seq()
    }

    /// Every robot frame received so far, in arrival order.
    pub fn frames(&self) -> &[Received] {
        &self.frames
    }

    /// The timeline position now: frames from here on arrived after this call.
    pub fn mark(&self) -> usize {
        self.frames.len()
    }

    /// Robot frames discarded so far (bad CRC, invalid field, …), with the reason.
    pub fn discarded(&self) -> &[DecodeError] {
        &self.discarded
    }

    /// Moves what the reader thread has into the timeline, waiting until `deadline` for at
    /// least one item. Returns false if nothing came.
    fn pump(&mut self, deadline: Instant) -> Result<bool, SessionError> {
        loop {
            if self.interrupts.requested() {
                return Err(SessionError::Interrupted);
            }
            if let Some(why) = &self.closed {
                return Err(SessionError::Link(io::Error::other(why.clone())));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let slice = (deadline - now).min(Duration::from_millis(20));
            match self.inbox.recv_timeout(slice) {
                Ok(item) => {
                    self.take(item);
                    while let Ok(more) = self.inbox.try_recv() {
                        self.take(more);
                    }
                    return Ok(true);
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    self.closed = Some("the reader stopped".into());
                }
            }
        }
    }

    fn take(&mut self, item: Inbound) {
        match item {
            Inbound::Frame(f) => self.frames.push(f),
            Inbound::Discarded(e) => self.discarded.push(e),
            Inbound::Closed(e) => self.closed = Some(e.to_string()),
        }
    }

    /// Waits until `deadline` for a frame at index ≥ `from` that satisfies `pred`; returns
    /// its index.
    pub fn wait_for(
        &mut self,
        from: usize,
        deadline: Instant,
        mut pred: impl FnMut(&Received) -> bool,
    ) -> Result<Option<usize>, SessionError> {
        let mut scanned = from;
        loop {
            if let Some(i) = self.frames[scanned.min(self.frames.len())..]
                .iter()
                .position(&mut pred)
            {
                return Ok(Some(scanned + i));
            }
            scanned = self.frames.len().max(from);
            if !self.pump(deadline)? {
                return Ok(None);
            }
        }
    }

    /// Keeps receiving until `deadline` (everything lands in the timeline).
    pub fn idle_until(&mut self, deadline: Instant) -> Result<(), SessionError> {
        while self.pump(deadline)? {}
        Ok(())
    }

    /// Waits up to `timeout` for the response to `sent` (ack_seq = its seq), looking at
    /// frames from `from` on.
    pub fn answer_from(
        &mut self,
        from: usize,
        sent: &Sent,
        timeout: Duration,
    ) -> Result<Option<Received>, SessionError> {
        let seq = sent.seq;
        let i = self.wait_for(from, sent.at + timeout, |f| f.ack_seq() == Some(seq))?;
        Ok(i.map(|i| self.frames[i]))
    }

    /// Sends `msg` and waits up to `timeout` for its response.
    pub fn request(
        &mut self,
        msg: &HostMsg,
        timeout: Duration,
    ) -> Result<(Sent, Option<Received>), SessionError> {
        let from = self.mark();
        let sent = self.send(msg)?;
        let answer = self.answer_from(from, &sent, timeout)?;
        Ok((sent, answer))
    }

    /// Waits up to `timeout` (from now) for Ready, or a robot heartbeat saying Ready, at or
    /// after `from`.
    pub fn wait_ready(
        &mut self,
        from: usize,
        timeout: Duration,
    ) -> Result<Option<Received>, SessionError> {
        let i = self.wait_for(from, Instant::now() + timeout, |f| {
            matches!(
                f.msg,
                RobotMsg::Ready
                    | RobotMsg::Heartbeat {
                        state: RobotState::Ready,
                        ..
                    }
            )
        })?;
        Ok(i.map(|i| self.frames[i]))
    }

    /// Waits up to `timeout` (from now) for a robot heartbeat at or after `from`; returns
    /// its state.
    pub fn wait_heartbeat(
        &mut self,
        from: usize,
        timeout: Duration,
    ) -> Result<Option<RobotState>, SessionError> {
        let i = self.wait_for(from, Instant::now() + timeout, |f| {
            matches!(f.msg, RobotMsg::Heartbeat { .. })
        })?;
        Ok(i.and_then(|i| match self.frames[i].msg {
            RobotMsg::Heartbeat { state, .. } => Some(state),
            _ => None,
        }))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.heartbeats = None;
        self.reader_stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.reader.take() {
            let _ = t.join();
        }
    }
}
