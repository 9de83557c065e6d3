//! `episode`, `abort` and `status`: episodes the robot runs with its default parameters.

use std::time::{Duration, Instant};

use firmware_protocol::{EpisodePhase, EpisodeStatus, HostMsg, RobotMsg, RobotState, StopCause};

use super::{
    as_end, describe, expect_acked, is_ack, ms, reward_sum, wraps_forward, Check, CheckId, End,
    Episode, Probe, ANSWER_TIMEOUT, LONG_EPISODE, SHORT_EPISODE,
};
use crate::probe::session::SessionError;

/// Steps the probe waits for before it interrupts an episode (Abort, GetStatus).
const STEPS_BEFORE_INTERRUPT: usize = 5;

/// `episode`: a 20-step episode frame by frame, then a 0-step one.
pub fn episode(p: &mut Probe) -> Result<Check, SessionError> {
    let mut c = Check::new(CheckId::Episode);
    let Some(summary) = run_and_check(p, &mut c, SHORT_EPISODE)? else {
        return Ok(c);
    };
    c.measured(summary);
    if run_and_check(p, &mut c, 0)?.is_some() {
        c.claim("max_steps 0 completes at once");
    }
    Ok(c)
}

/// Runs one episode of `max_steps` to completion and checks every frame of it (SPEC §7.3,
/// §9.2, §5 EpisodeEnd). Returns a summary if it got as far as Ready.
fn run_and_check(
    p: &mut Probe,
    c: &mut Check,
    max_steps: u32,
) -> Result<Option<String>, SessionError> {
    let ep = p.start(max_steps)?;
    let ack = p.answer(&ep)?;
    if !c.expect(
        is_ack(ack.as_ref()),
        format!("Ack to StartEpisode{{max_steps {max_steps}}}"),
        || describe(ack.as_ref()),
        "§9.2",
    ) {
        return Ok(None);
    }
    let ack_at = p.s.frames()[ep.from..]
        .iter()
        .position(|f| f.ack_seq() == Some(ep.sent.seq))
        .map(|i| ep.from + i)
        .expect("the answer is on the timeline");
    let budget = p.step_budget(max_steps);
    let Some((end_at, end)) = p.wait_end(&ep, Instant::now() + budget)? else {
        let stray = stray_steps(p, &ep, p.s.mark());
        c.fail(
            format!(
                "EpisodeEnd echoing trial {} episode {} after {max_steps} Steps",
                ep.trial, ep.episode
            ),
            format!(
                "none within {} ms ({} Steps echoing it, {} Steps of other trials/episodes)",
                budget.as_millis(),
                p.steps(&ep, ep.from, p.s.mark()).len(),
                stray.len()
            ),
            "§9.2",
        );
        return Ok(None);
    };
    let steps = p.steps(&ep, ep.from, end_at);
    if let Some((first, _)) = steps.first() {
        c.expect(
            ack_at < *first,
            "StartEpisode's Ack before the episode's first Step",
            || "Step 0 arrived before the Ack".into(),
            "§7.3",
        );
    }
    let stray = stray_steps(p, &ep, end_at);
    c.expect(
        stray.is_empty(),
        format!("Steps echoing trial {} episode {}", ep.trial, ep.episode),
        || format!("Steps with {}", stray.join(", ")),
        "§9.2",
    );
    let numbered = steps
        .iter()
        .enumerate()
        .all(|(k, (_, s))| s.step == k as u32);
    c.expect(
        numbered,
        "Step.step = 0, 1, 2, … in order",
        || {
            let got: Vec<String> = steps
                .iter()
                .take(12)
                .map(|(_, s)| s.step.to_string())
                .collect();
            format!("step {}", got.join(", "))
        },
        "§9.2",
    );
    let sum = reward_sum(&steps);
    check_end(c, &ep, &end, steps.len(), sum);
    let end_time = p.s.frames()[end_at].at;
    let ready = p.ready_after(end_at, end_time)?;
    let late = p.steps(&ep, end_at, p.s.mark()).len();
    c.expect(
        late == 0,
        "no Step after EpisodeEnd",
        || format!("{late} Step(s) after it"),
        "§9.2",
    );
    let Some(ready) = ready else {
        c.fail(
            "Ready after a completed episode",
            format!("none within {} ms", p.ready_timeout.as_millis()),
            "§9.2",
        );
        return Ok(None);
    };
    Ok(Some(format!(
        "{} Steps, return {}, Ready {} after EpisodeEnd",
        steps.len(),
        sum,
        ms(ready)
    )))
}

/// Steps received since `ep` started, up to timeline position `to`, that echo another trial
/// or episode.
fn stray_steps(p: &Probe, ep: &Episode, to: usize) -> Vec<String> {
    p.s.frames()[ep.from..to]
        .iter()
        .filter_map(|f| match f.msg {
            RobotMsg::Step(s) if (s.trial, s.episode) != (ep.trial, ep.episode) => {
                Some(format!("trial {} episode {}", s.trial, s.episode))
            }
            _ => None,
        })
        .collect()
}

/// EpisodeEnd of a completed episode: echoes, status, step count and the exact return.
fn check_end(c: &mut Check, ep: &Episode, end: &End, received: usize, sum: f32) {
    c.expect(
        end.status == EpisodeStatus::Completed,
        "EpisodeEnd status Completed",
        || format!("{:?}", end.status),
        "§9.2",
    );
    c.expect(
        end.steps as usize == received && received == ep.max_steps as usize,
        format!(
            "EpisodeEnd steps = Step frames sent = max_steps {}",
            ep.max_steps
        ),
        || format!("steps {} with {received} Step frames received", end.steps),
        "§5 EpisodeEnd",
    );
    c.expect(
        end.episode_return.to_bits() == sum.to_bits(),
        format!(
            "episode_return = binary32 sum of the Step rewards in order = {sum} ({:#010x})",
            sum.to_bits()
        ),
        || {
            format!(
                "{} ({:#010x})",
                end.episode_return,
                end.episode_return.to_bits()
            )
        },
        "§5 EpisodeEnd",
    );
}

/// `abort`: Abort a running episode, then run another (not latched).
pub fn abort(p: &mut Probe) -> Result<Check, SessionError> {
    let mut c = Check::new(CheckId::Abort);
    let ep = p.start(LONG_EPISODE)?;
    let ack = p.answer(&ep)?;
    if !c.expect(
        is_ack(ack.as_ref()),
        "Ack to StartEpisode",
        || describe(ack.as_ref()),
        "§9.2",
    ) {
        return Ok(c);
    }
    let deadline = Instant::now() + p.step_budget(STEPS_BEFORE_INTERRUPT as u32);
    if !p.wait_steps(&ep, STEPS_BEFORE_INTERRUPT, deadline)? {
        return Ok(c.skip(format!(
            "inconclusive: no {STEPS_BEFORE_INTERRUPT} running Steps to abort (the episode ended or stalled)"
        )));
    }
    let Some(ack_at) = expect_acked(p, &mut c, &HostMsg::Abort, "§4 Abort")? else {
        return Ok(c);
    };
    let limit = (p.step_period() * 10).max(Duration::from_secs(1));
    let Some((end_at, end)) = p.wait_end(&ep, Instant::now() + limit)? else {
        let running = p.steps(&ep, ack_at, p.s.mark()).len();
        c.fail(
            format!(
                "EpisodeEnd Aborted within {} ms of Abort's Ack",
                limit.as_millis()
            ),
            format!("no EpisodeEnd; {running} Steps after the Ack"),
            "§4 Abort, §9.2",
        );
        return Ok(c);
    };
    let before = p.steps(&ep, ep.from, ack_at).len();
    let after_ack = p.steps(&ep, ack_at, end_at).len();
    if end_at < ack_at && end.status == EpisodeStatus::Completed && before == LONG_EPISODE as usize
    {
        let end_time = p.s.frames()[end_at].at;
        p.ready_after(end_at, end_time)?;
        return Ok(c.skip(format!(
            "inconclusive: all {LONG_EPISODE} steps ran before Abort arrived"
        )));
    }
    c.expect(
        end.status == EpisodeStatus::Aborted,
        "EpisodeEnd status Aborted",
        || {
            format!(
                "{:?} after {} Steps ({after_ack} after Abort's Ack)",
                end.status,
                before + after_ack
            )
        },
        "§4 Abort, §9.2",
    );
    c.expect(
        ack_at < end_at,
        "Abort's Ack before its EpisodeEnd",
        || "EpisodeEnd first".into(),
        "§7.3",
    );
    let end_time = p.s.frames()[end_at].at;
    let ready = p.ready_after(end_at, end_time)?;
    let late = p.steps(&ep, end_at, p.s.mark()).len();
    c.expect(
        late == 0,
        "no Step after EpisodeEnd",
        || format!("{late} Step(s)"),
        "§9.2",
    );
    c.expect(
        ready.is_some(),
        "Ready after an aborted episode (reset, not latched)",
        || format!("none within {} ms", p.ready_timeout.as_millis()),
        "§4 Abort, §9.2",
    );
    let next = p.start(3)?;
    let next_ack = p.answer(&next)?;
    if c.expect(
        is_ack(next_ack.as_ref()),
        "Ack to the next StartEpisode (an Abort does not latch)",
        || describe(next_ack.as_ref()),
        "§4 Abort",
    ) {
        let budget = p.step_budget(next.max_steps);
        if let Some((i, _)) = p.wait_end(&next, Instant::now() + budget)? {
            let at = p.s.frames()[i].at;
            p.ready_after(i, at)?;
        }
    }
    c.measured(format!(
        "{:?} after {} Steps ({after_ack} after Abort's Ack){}",
        end.status,
        before + after_ack,
        ready
            .map(|r| format!(", Ready after {}", ms(r)))
            .unwrap_or_default()
    ));
    Ok(c)
}

/// `status` (v2): GetStatus in Ready, Running and after an episode, against the frames seen.
pub fn status(p: &mut Probe) -> Result<Check, SessionError> {
    let mut c = Check::new(CheckId::Status);
    if !p.v2() {
        return Ok(c.skip("protocol v1: GetStatus is a v2 message"));
    }
    let mut uptimes = Vec::new();
    let Some((_, ready)) = status_or_fail(p, &mut c, "in Ready")? else {
        return Ok(c);
    };
    uptimes.push(ready.uptime_ms);
    common_fields(p, &mut c, &ready, "in Ready");
    c.expect(
        ready.state == RobotState::Ready,
        "Status state Ready (after Ready was received)",
        || format!("{:?}", ready.state),
        "Status",
    );
    if let Some((trial, episode, steps, end)) = last_episode(p) {
        c.expect(
            ready.phase == EpisodePhase::Ended
                && (ready.trial, ready.episode, ready.end_status) == (trial, episode, end.status)
                && ready.steps as usize == steps
                && ready.episode_return.to_bits() == end.episode_return.to_bits(),
            format!(
                "in Ready: the last episode (trial {trial}, episode {episode}): Ended {:?}, steps {steps}, return {}",
                end.status, end.episode_return
            ),
            || {
                format!(
                    "{:?} trial {} episode {} {:?}, steps {}, return {}",
                    ready.phase, ready.trial, ready.episode, ready.end_status, ready.steps, ready.episode_return
                )
            },
            "Status",
        );
    }

    let ep = p.start(SHORT_EPISODE * 2)?;
    let ack = p.answer(&ep)?;
    if !c.expect(
        is_ack(ack.as_ref()),
        "Ack to StartEpisode",
        || describe(ack.as_ref()),
        "§9.2",
    ) {
        return Ok(c);
    }
    let deadline = Instant::now() + p.step_budget(STEPS_BEFORE_INTERRUPT as u32);
    if p.wait_steps(&ep, STEPS_BEFORE_INTERRUPT, deadline)? {
        let Some((at, running)) = status_or_fail(p, &mut c, "while Running")? else {
            return Ok(c);
        };
        uptimes.push(running.uptime_ms);
        common_fields(p, &mut c, &running, "while Running");
        let steps = p.steps(&ep, ep.from, at);
        let sum = reward_sum(&steps);
        let ended_first = p.s.frames()[ep.from..at].iter().any(|f| {
            as_end(&f.msg).is_some_and(|e| (e.trial, e.episode) == (ep.trial, ep.episode))
        });
        if ended_first {
            c.measured("the episode ended before GetStatus arrived: Running not sampled");
        } else {
            c.expect(
            running.state == RobotState::Running
                && running.phase == EpisodePhase::Running
                && (running.trial, running.episode) == (ep.trial, ep.episode)
                && running.steps as usize == steps.len()
                && running.episode_return.to_bits() == sum.to_bits(),
            format!(
                "while Running: Running, phase Running, trial {} episode {}, steps {} and return {sum} (the Steps sent before it)",
                ep.trial, ep.episode, steps.len()
            ),
            || {
                format!(
                    "{:?}, phase {:?}, trial {} episode {}, steps {}, return {}",
                    running.state, running.phase, running.trial, running.episode, running.steps, running.episode_return
                )
            },
            "Status",
        );
        }
    } else {
        c.measured("the episode ended before a Running status could be asked");
    }
    let budget = p.step_budget(ep.max_steps);
    let Some((end_at, end)) = p.wait_end(&ep, Instant::now() + budget)? else {
        c.fail(
            "EpisodeEnd",
            format!("none within {} ms", budget.as_millis()),
            "§9.2",
        );
        return Ok(c);
    };
    let Some((_, ended)) = status_or_fail(p, &mut c, "after EpisodeEnd")? else {
        return Ok(c);
    };
    uptimes.push(ended.uptime_ms);
    common_fields(p, &mut c, &ended, "after EpisodeEnd");
    let received = p.steps(&ep, ep.from, end_at).len();
    c.expect(
        ended.phase == EpisodePhase::Ended
            && (ended.trial, ended.episode, ended.end_status) == (ep.trial, ep.episode, end.status)
            && ended.steps as usize == received
            && ended.episode_return.to_bits() == end.episode_return.to_bits()
            && matches!(ended.state, RobotState::Resetting | RobotState::Ready),
        format!(
            "after EpisodeEnd: Resetting or Ready, phase Ended {:?}, trial {} episode {}, steps {received}, return {}",
            end.status, ep.trial, ep.episode, end.episode_return
        ),
        || {
            format!(
                "{:?}, phase {:?} {:?}, trial {} episode {}, steps {}, return {}",
                ended.state, ended.phase, ended.end_status, ended.trial, ended.episode, ended.steps, ended.episode_return
            )
        },
        "Status",
    );
    c.expect(
        uptimes
            .windows(2)
            .all(|w| w[0] == w[1] || wraps_forward(w[0], w[1])),
        "uptime_ms never going backwards across Status answers",
        || format!("{uptimes:?}"),
        "Status",
    );
    let end_time = p.s.frames()[end_at].at;
    p.ready_after(end_at, end_time)?;
    c.claim("Ready, Running and Ended reported consistently with the frames seen");
    Ok(c)
}

/// GetStatus, or a failure naming `when` it was not answered.
fn status_or_fail(
    p: &mut Probe,
    c: &mut Check,
    when: &str,
) -> Result<Option<(usize, firmware_protocol::Status)>, SessionError> {
    let s = p.status()?;
    if s.is_none() {
        c.fail(
            format!("Status answering GetStatus {when}"),
            format!("no answer within {} ms", ANSWER_TIMEOUT.as_millis()),
            "Status",
        );
    }
    Ok(s)
}

/// Fields that hold in every state the status check asks in: same boot, parameters applied,
/// not stopped.
fn common_fields(p: &Probe, c: &mut Check, s: &firmware_protocol::Status, when: &str) {
    c.expect(
        s.boot_id == p.info.boot_id,
        format!("boot_id {:#010x} (Info's) {when}", p.info.boot_id),
        || format!("{:#010x}", s.boot_id),
        "Status, §7.6",
    );
    c.expect(
        s.params_applied && s.stop_cause == StopCause::NotStopped && s.stop_value == 0.0,
        format!("params_applied, stop_cause NotStopped, stop_value 0 {when}"),
        || {
            format!(
                "params_applied {}, stop_cause {:?}, stop_value {}",
                s.params_applied, s.stop_cause, s.stop_value
            )
        },
        "Status",
    );
}

/// The last episode that ended in this session: (trial, episode, Step frames received, End).
fn last_episode(p: &Probe) -> Option<(u32, u16, usize, End)> {
    let frames = p.s.frames();
    let (i, end) = frames
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, f)| as_end(&f.msg).map(|e| (i, e)))?;
    let steps = frames[..i]
        .iter()
        .filter(|f| matches!(f.msg, RobotMsg::Step(s) if s.trial == end.trial && s.episode == end.episode))
        .count();
    Some((end.trial, end.episode, steps, end))
}
