//! `estop-stop`, `estop-latch` and `watchdog` (SPEC §10).

use std::time::{Duration, Instant};

use firmware_protocol::{
    EpisodeStatus, HostMsg, NackCode, RobotMsg, RobotState, StopCause, TripReason,
};

use super::{
    answer_position, as_end, describe, describe_msg, expect_acked, is_ack, is_nack, ms, Check,
    CheckId, Probe, ANSWER_TIMEOUT, LONG_EPISODE,
};
use crate::probe::session::SessionError;

/// Running Steps the probe waits for before sending EStop.
const STEPS_BEFORE_ESTOP: usize = 3;
/// Slowest EStop Ack accepted: a host would be resending it after this (SPEC §7.4).
const ESTOP_ACK_LIMIT: Duration = Duration::from_millis(250);

/// What went wrong in some of the EStop samples, counted.
#[derive(Default)]
struct Tally {
    count: usize,
    first: Option<String>,
}

impl Tally {
    fn add(&mut self, sample: u32, what: String) {
        self.count += 1;
        self.first
            .get_or_insert(format!("sample {}: {what}", sample + 1));
    }

    fn report(&self, c: &mut Check, expected: &str, samples: u32, spec: &'static str) {
        if let Some(first) = &self.first {
            c.fail(
                expected,
                format!("in {} of {samples} samples; first: {first}", self.count),
                spec,
            );
        }
    }
}

/// `estop-stop`: N times, EStop a running episode; measure the Ack latency and check that no
/// Step follows the Ack and EpisodeEnd EStopped does; ClearEStop between samples.
pub fn estop_stop(p: &mut Probe) -> Result<Check, SessionError> {
    let mut c = Check::new(CheckId::EStopStop);
    let samples = p.estop_samples.max(1);
    let mut latencies = Vec::new();
    let mut in_flight = 0;
    let mut most_after = 0;
    let mut inconclusive = 0;
    let (mut slow, mut late_steps, mut bad_end) =
        (Tally::default(), Tally::default(), Tally::default());
    for i in 0..samples {
        let ep = p.start(LONG_EPISODE)?;
        let ack = p.answer(&ep)?;
        if !c.expect(
            is_ack(ack.as_ref()),
            "Ack to StartEpisode",
            || describe(ack.as_ref()),
            "§9.2",
        ) {
            break;
        }
        let deadline = Instant::now() + p.step_budget(STEPS_BEFORE_ESTOP as u32);
        p.wait_steps(&ep, STEPS_BEFORE_ESTOP, deadline)?;
        let from = p.s.mark();
        let sent = p.s.send(&HostMsg::EStop)?;
        let Some(answer) = p.s.answer_from(from, &sent, ANSWER_TIMEOUT)? else {
            c.fail("Ack to EStop", describe(None), "§10.1");
            break;
        };
        let latency = answer.at.saturating_duration_since(sent.at);
        latencies.push(latency);
        if !is_ack(Some(&answer)) {
            c.fail("Ack to EStop", describe_msg(&answer.msg), "§10.1");
            break;
        }
        if latency > ESTOP_ACK_LIMIT {
            slow.add(i, format!("Ack after {}", ms(latency)));
        }
        let ack_at = answer_position(&p.s, from, &sent).expect("answered");
        in_flight = in_flight.max(p.steps(&ep, from, ack_at).len());
        let end = p.wait_end(&ep, Instant::now() + Duration::from_secs(1))?;
        let end_at = end.map(|e| e.0).unwrap_or(p.s.mark());
        let after = p.steps(&ep, ack_at, end_at);
        most_after = most_after.max(after.len());
        if !after.is_empty() {
            late_steps.add(
                i,
                format!(
                    "{} Step(s) after the Ack (last: step {})",
                    after.len(),
                    after[after.len() - 1].1.step
                ),
            );
        }
        match end {
            Some((at, e)) if e.status == EpisodeStatus::Completed && at < ack_at => {
                inconclusive += 1;
            }
            Some((at, e)) if e.status == EpisodeStatus::EStopped && at > ack_at => {}
            Some((_, e)) => {
                bad_end.add(i, format!("EpisodeEnd {:?} (steps {})", e.status, e.steps))
            }
            None => bad_end.add(i, "no EpisodeEnd within 1 s of the Ack".into()),
        }
        let from = p.s.mark();
        let (_, clear) = p.s.request(&HostMsg::ClearEStop, ANSWER_TIMEOUT)?;
        if !c.expect(
            is_ack(clear.as_ref()),
            "Ack to ClearEStop",
            || describe(clear.as_ref()),
            "§10.3",
        ) {
            break;
        }
        if p.ready_after(from, Instant::now())?.is_none() {
            c.fail(
                "Ready after ClearEStop",
                format!("none within {} ms", p.ready_timeout.as_millis()),
                "§10.3",
            );
            break;
        }
    }
    let n = latencies.len() as u32;
    slow.report(
        &mut c,
        &format!(
            "EStop acknowledged within {} ms",
            ESTOP_ACK_LIMIT.as_millis()
        ),
        n,
        "§10.1, §7.4",
    );
    late_steps.report(
        &mut c,
        "no Step after EStop's Ack (motors stopped before the Ack)",
        n,
        "§10.1",
    );
    bad_end.report(
        &mut c,
        "EpisodeEnd EStopped after EStop's Ack",
        n,
        "§10.1, §7.3",
    );
    if !latencies.is_empty() {
        latencies.sort();
        let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
        c.measured(format!(
            "Ack p50 {}, p99 {}, max {} over {} EStops; Steps between EStop and its Ack: up to {in_flight}, after its Ack: up to {most_after}",
            ms(pick(0.5)),
            ms(pick(0.99)),
            ms(latencies[latencies.len() - 1]),
            latencies.len()
        ));
    }
    if inconclusive > 0 {
        c.measured(format!(
            "{inconclusive} episode(s) had completed before EStop arrived"
        ));
    }
    if inconclusive == latencies.len() && inconclusive > 0 {
        c.mark_skipped("inconclusive: every episode completed before its EStop arrived");
    }
    Ok(c)
}

/// `estop-latch`: EStop from Ready latches Stopped (commands refused, heartbeats and Status
/// say so, Hello/GetParamInfo/Abort/EStop still answered) until ClearEStop, which resets to
/// Ready.
pub fn estop_latch(p: &mut Probe) -> Result<Check, SessionError> {
    let mut c = Check::new(CheckId::EStopLatch);
    let Some(ack_at) = expect_acked(p, &mut c, &HostMsg::EStop, "§10.1")? else {
        return Ok(c);
    };
    let hb = p.heartbeat_state(ack_at + 1)?;
    c.expect(
        hb == Some(RobotState::Stopped),
        "robot heartbeats saying Stopped while latched",
        || match hb {
            Some(st) => format!("a heartbeat saying {st:?}"),
            None => "no heartbeat within 1.5 s".into(),
        },
        "§10.1, §3.3",
    );
    let defaults = p.defaults();
    let (_, set) = p.set_params(&defaults)?;
    c.expect(
        is_nack(set.as_ref(), NackCode::EStopLatched),
        "Nack EStopLatched to SetParams while latched",
        || describe(set.as_ref()),
        "§10.1",
    );
    let ep = p.start(3)?;
    let start = p.answer(&ep)?;
    if !c.expect(
        is_nack(start.as_ref(), NackCode::EStopLatched),
        "Nack EStopLatched to StartEpisode while latched",
        || describe(start.as_ref()),
        "§10.1",
    ) && is_ack(start.as_ref())
    {
        // It started: let the 3 steps finish before going on.
        p.wait_end(&ep, Instant::now() + p.step_budget(ep.max_steps))?;
    }
    if p.v2() {
        let status = p.status()?;
        c.expect(
            matches!(status, Some((_, s)) if s.state == RobotState::Stopped && s.stop_cause == StopCause::EStop),
            "GetStatus: state Stopped, stop_cause EStop",
            || match status {
                Some((_, s)) => format!("state {:?}, stop_cause {:?}", s.state, s.stop_cause),
                None => describe(None),
            },
            "Status, §10.1",
        );
    }
    still_answered(p, &mut c)?;
    let from = p.s.mark();
    let (clear_sent, clear) = p.s.request(&HostMsg::ClearEStop, ANSWER_TIMEOUT)?;
    if !c.expect(
        is_ack(clear.as_ref()),
        "Ack to ClearEStop",
        || describe(clear.as_ref()),
        "§10.3",
    ) {
        return Ok(c);
    }
    let Some(ready) = p.ready_after(from, clear_sent.at)? else {
        c.fail(
            "Ready after ClearEStop (parameters applied)",
            format!("none within {} ms", p.ready_timeout.as_millis()),
            "§10.3",
        );
        return Ok(c);
    };
    if p.v2() {
        let status = p.status()?;
        c.expect(
            matches!(status, Some((_, s)) if s.state != RobotState::Stopped && s.stop_cause == StopCause::NotStopped),
            "GetStatus after release: not Stopped, stop_cause NotStopped",
            || match status {
                Some((_, s)) => format!("state {:?}, stop_cause {:?}", s.state, s.stop_cause),
                None => describe(None),
            },
            "Status, §10.3",
        );
    }
    let from = p.s.mark();
    let (_, again) = p.s.request(&HostMsg::ClearEStop, ANSWER_TIMEOUT)?;
    let ready_again = p.s.wait_ready(from, Duration::from_secs(1))?;
    c.expect(
        is_ack(again.as_ref()) && ready_again.is_some(),
        "ClearEStop in Ready: Ack, then Ready again",
        || {
            format!(
                "{}, {}",
                describe(again.as_ref()),
                if ready_again.is_some() {
                    "Ready"
                } else {
                    "no Ready within 1 s"
                }
            )
        },
        "§8, §10.3",
    );
    c.measured(format!("Ready {} after ClearEStop", ms(ready)));
    c.claim(if p.v2() {
        "latched: SetParams and StartEpisode refused, heartbeats and Status say Stopped"
    } else {
        "latched: SetParams and StartEpisode refused, heartbeats say Stopped"
    });
    Ok(c)
}

/// While latched, Hello, GetParamInfo, Abort and EStop are answered as usual (SPEC §10.1).
fn still_answered(p: &mut Probe, c: &mut Check) -> Result<(), SessionError> {
    let version = p.info.protocol_version;
    let (_, info) = p.s.request(
        &HostMsg::Hello {
            protocol_version: version,
        },
        ANSWER_TIMEOUT,
    )?;
    c.expect(
        matches!(info.map(|a| a.msg), Some(RobotMsg::Info { boot_id, .. }) if boot_id == p.info.boot_id),
        "Info (same boot_id) to Hello while latched",
        || describe(info.as_ref()),
        "§10.1",
    );
    if !p.params.is_empty() {
        let (_, pi) =
            p.s.request(&HostMsg::GetParamInfo { index: 0 }, ANSWER_TIMEOUT)?;
        c.expect(
            matches!(
                pi.map(|a| a.msg),
                Some(RobotMsg::ParamInfo { index: 0, .. })
            ),
            "ParamInfo to GetParamInfo while latched",
            || describe(pi.as_ref()),
            "§10.1",
        );
    }
    for (msg, name) in [(HostMsg::Abort, "Abort"), (HostMsg::EStop, "EStop")] {
        let (_, a) = p.s.request(&msg, ANSWER_TIMEOUT)?;
        c.expect(
            is_ack(a.as_ref()),
            format!("Ack to {name} while latched"),
            || describe(a.as_ref()),
            "§10.1",
        );
    }
    Ok(())
}

/// `watchdog`: the host goes quiet during an episode; SafetyTrip Watchdog must come within
/// watchdog_ms plus two host heartbeat periods, then EpisodeEnd SafetyTrip, latched.
pub fn watchdog(p: &mut Probe) -> Result<Check, SessionError> {
    let mut c = Check::new(CheckId::Watchdog);
    let result = quiet_episode(p, &mut c);
    p.s.resume_heartbeats();
    let outcome = result?;
    if outcome.is_none() || c.failed() {
        return Ok(c);
    }
    let latched = p.start(3)?;
    let refused = p.answer(&latched)?;
    c.expect(
        is_nack(refused.as_ref(), NackCode::EStopLatched),
        "Nack EStopLatched to StartEpisode after a watchdog trip (latched)",
        || describe(refused.as_ref()),
        "§10.4",
    );
    if p.v2() {
        let status = p.status()?;
        c.expect(
            matches!(status, Some((_, s)) if s.state == RobotState::Stopped && s.stop_cause == StopCause::Watchdog),
            "GetStatus: state Stopped, stop_cause Watchdog",
            || match status {
                Some((_, s)) => format!("state {:?}, stop_cause {:?}", s.state, s.stop_cause),
                None => describe(None),
            },
            "Status, §10.4",
        );
    }
    let from = p.s.mark();
    let (_, clear) = p.s.request(&HostMsg::ClearEStop, ANSWER_TIMEOUT)?;
    let ready = if is_ack(clear.as_ref()) {
        p.ready_after(from, Instant::now())?
    } else {
        None
    };
    c.expect(
        ready.is_some(),
        "ClearEStop releases the watchdog latch: Ack, then Ready",
        || format!("{}, no Ready", describe(clear.as_ref())),
        "§10.3",
    );
    Ok(c)
}

/// Starts a long episode with host heartbeats paused and watches for the trip. Returns
/// Some(()) when the robot tripped in time (the caller then checks the latch).
fn quiet_episode(p: &mut Probe, c: &mut Check) -> Result<Option<()>, SessionError> {
    let wd = Duration::from_millis(p.info.watchdog_ms as u64);
    let limit = wd + p.info.host_heartbeat_period() * 2;
    p.s.pause_heartbeats();
    let ep = p.start(LONG_EPISODE)?;
    let quiet_since = ep.sent.at;
    let ack = p.answer(&ep)?;
    if !c.expect(
        is_ack(ack.as_ref()),
        "Ack to StartEpisode",
        || describe(ack.as_ref()),
        "§9.2",
    ) {
        return Ok(None);
    }
    let over = quiet_since + limit;
    let event =
        p.s.wait_for(ep.from, over + Duration::from_millis(500), |f| {
            match &f.msg {
                RobotMsg::SafetyTrip { .. } => true,
                RobotMsg::Step(s) => s.trial == ep.trial && f.at > over,
                m => as_end(m).is_some_and(|e| e.trial == ep.trial),
            }
        })?;
    let Some(i) = event else {
        c.fail(
            format!(
                "SafetyTrip Watchdog within {} ms of host silence",
                limit.as_millis()
            ),
            "nothing: no Step, no SafetyTrip, no EpisodeEnd",
            "§10.4",
        );
        return Ok(None);
    };
    let f = p.s.frames()[i];
    let silent = f.at.saturating_duration_since(quiet_since);
    match f.msg {
        RobotMsg::SafetyTrip { reason, value, .. } => {
            c.expect(
                reason == TripReason::Watchdog,
                "SafetyTrip reason Watchdog",
                || format!("reason {reason:?}"),
                "§10.4",
            );
            c.expect(
                silent <= limit,
                format!(
                    "SafetyTrip within {} ms (watchdog_ms + 2 host heartbeat periods)",
                    limit.as_millis()
                ),
                || format!("after {} ms", silent.as_millis()),
                "§10.4",
            );
            let end = p.wait_end(&ep, Instant::now() + Duration::from_secs(1))?;
            c.expect(
                matches!(end, Some((at, e)) if at > i && e.status == EpisodeStatus::SafetyTrip),
                "EpisodeEnd SafetyTrip after the SafetyTrip",
                || match end {
                    Some((_, e)) => format!("EpisodeEnd {:?}", e.status),
                    None => "no EpisodeEnd within 1 s".into(),
                },
                "§10.2, §10.4",
            );
            let after = p
                .steps(&ep, i, end.map(|e| e.0).unwrap_or(p.s.mark()))
                .len();
            c.expect(
                after == 0,
                "no Step after the SafetyTrip",
                || format!("{after} Step(s)"),
                "§10.2",
            );
            c.measured(format!(
                "SafetyTrip Watchdog {} ms after the host went quiet (watchdog {} ms, limit {} ms; the firmware counted {value} ms)",
                silent.as_millis(),
                wd.as_millis(),
                limit.as_millis()
            ));
            Ok(Some(()))
        }
        RobotMsg::Step(s) => {
            c.fail(
                format!(
                    "SafetyTrip Watchdog within {} ms of host silence",
                    limit.as_millis()
                ),
                format!(
                    "still running: Step {} {} ms after the host went quiet",
                    s.step,
                    silent.as_millis()
                ),
                "§10.4",
            );
            Ok(None)
        }
        _ => {
            let end = as_end(&f.msg).expect("matched an EpisodeEnd");
            if end.status == EpisodeStatus::Completed && silent <= limit {
                c.mark_skipped(format!(
                    "inconclusive: the {}-step episode completed {} ms after the host went quiet, before the watchdog ({} ms) had to trip; run the firmware at its real step pace",
                    ep.max_steps,
                    silent.as_millis(),
                    wd.as_millis()
                ));
                p.s.resume_heartbeats();
                p.ready_after(i, f.at)?;
            } else {
                c.fail(
                    format!(
                        "SafetyTrip Watchdog within {} ms of host silence",
                        limit.as_millis()
                    ),
                    format!(
                        "EpisodeEnd {:?} {} ms after the host went quiet, no SafetyTrip",
                        end.status,
                        silent.as_millis()
                    ),
                    "§10.4",
                );
            }
            Ok(None)
        }
    }
}
