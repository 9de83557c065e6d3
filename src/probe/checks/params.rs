//! `set-params-echo` and `retry-idempotence`.

use std::time::{Duration, Instant};

use firmware_protocol::{HostMsg, NackCode, RobotMsg, MAX_PARAMS};

use super::{
    describe, is_ack, is_nack, ms, Check, CheckId, Episode, Probe, ANSWER_TIMEOUT, SHORT_EPISODE,
};
use crate::probe::session::SessionError;

/// The smallest f32 above `x` (`x` finite), without `f32::next_up` (Rust ≥ 1.86).
fn next_up(x: f32) -> f32 {
    if x == 0.0 {
        return f32::from_bits(1);
    }
    let bits = x.to_bits();
    f32::from_bits(if x > 0.0 { bits + 1 } else { bits - 1 })
}

/// A finite value clearly above `max`, if there is one.
fn above(max: f32) -> Option<f32> {
    let v = max + max.abs().max(1.0);
    let v = if v.is_finite() && v > max {
        v
    } else {
        next_up(max)
    };
    v.is_finite().then_some(v)
}

/// A finite value clearly below `min`, if there is one.
fn below(min: f32) -> Option<f32> {
    above(-min).map(|v| -v)
}

/// `set-params-echo`: defaults echoed bit for bit, clamps reported, NaN/∞ and wrong counts
/// refused without effect, then the defaults applied again and Ready.
pub fn set_params_echo(p: &mut Probe) -> Result<Check, SessionError> {
    let mut c = Check::new(CheckId::SetParamsEcho);
    let defaults = p.defaults();
    let n = defaults.len();
    let Some(ready) = apply_checked(p, &mut c, &defaults, None)? else {
        return Ok(c);
    };
    c.measured(format!("Ready {} after ParamsApplied", ms(ready)));
    c.claim("defaults echoed bit-identical");

    let mut clamps = Vec::new();
    if let Some(first) = p.params.first().cloned() {
        match above(first.max) {
            Some(v) => {
                let mut values = defaults.clone();
                values[0] = v;
                if apply_checked(p, &mut c, &values, Some(0))?.is_some() {
                    clamps.push(format!("{} {v} → {}", first.name, first.max));
                }
            }
            None => c.measured(format!("{}: no finite value above max", first.name)),
        }
    }
    if let Some(last) = p.params.last().cloned() {
        let i = n - 1;
        match below(last.min) {
            Some(v) => {
                let mut values = defaults.clone();
                values[i] = v;
                if apply_checked(p, &mut c, &values, Some(i))?.is_some() {
                    clamps.push(format!("{} {v} → {}", last.name, last.min));
                }
            }
            None => c.measured(format!("{}: no finite value below min", last.name)),
        }
    }
    if !clamps.is_empty() {
        c.claim(format!(
            "clamped with their mask bit: {}",
            clamps.join(", ")
        ));
    }

    if n > 0 {
        for (i, bad) in [(0, f32::NAN), (n - 1, f32::INFINITY)] {
            let mut values = defaults.clone();
            values[i] = bad;
            refused(
                p,
                &mut c,
                &values,
                NackCode::NotFinite,
                &format!("value {i} = {bad}"),
            )?;
        }
    }
    if n < MAX_PARAMS {
        // Validation order (§8): the count is checked before the values.
        let values = vec![f32::NAN; n + 1];
        refused(
            p,
            &mut c,
            &values,
            NackCode::WrongParamCount,
            &format!("{} NaN values", n + 1),
        )?;
    }
    if n > 0 {
        refused(
            p,
            &mut c,
            &defaults[..n - 1],
            NackCode::WrongParamCount,
            &format!("{} values", n - 1),
        )?;
    }
    c.claim("NaN, ∞ and wrong counts refused without effect");
    apply_checked(p, &mut c, &defaults, None)?;
    Ok(c)
}

/// Sends SetParams(`values`) and checks the echo (SPEC §9.1): `clamp` names the one value
/// expected to be clamped; every other value must come back bit-identical with its bit clear.
/// Then waits for Ready. Returns how long Ready took, or None if an expectation failed.
fn apply_checked(
    p: &mut Probe,
    c: &mut Check,
    values: &[f32],
    clamp: Option<usize>,
) -> Result<Option<Duration>, SessionError> {
    let from = p.s.mark();
    let (sent, answer) = p.set_params(values)?;
    let Some(RobotMsg::ParamsApplied {
        clamped_mask,
        values: echo,
        ..
    }) = answer.map(|a| a.msg)
    else {
        c.fail("ParamsApplied", describe(answer.as_ref()), "§4 SetParams");
        return Ok(None);
    };
    let failures = c.failures.len();
    let echo = echo.as_slice();
    c.expect(
        echo.len() == values.len(),
        format!("{} values echoed", values.len()),
        || format!("{} values", echo.len()),
        "§5 ParamsApplied",
    );
    let n = values.len().min(echo.len());
    c.expect(
        n >= 64 || clamped_mask >> n == 0,
        format!("clamped_mask bits ≥ {n} clear"),
        || format!("clamped_mask {clamped_mask:#x}"),
        "§5 ParamsApplied",
    );
    for i in 0..n {
        let (sent_v, got) = (values[i], echo[i]);
        let bit = clamped_mask >> i & 1 == 1;
        let decl = p.params[i].clone();
        if clamp == Some(i) {
            let limit = if sent_v > decl.max {
                decl.max
            } else {
                decl.min
            };
            c.expect(
                bit,
                format!(
                    "clamped_mask bit {i} set ({} = {sent_v} is outside [{}, {}])",
                    decl.name, decl.min, decl.max
                ),
                || {
                    format!(
                        "clamped_mask {clamped_mask:#x}, {} echoed as {got}",
                        decl.name
                    )
                },
                "§9.1",
            );
            c.expect(
                got >= decl.min && got <= decl.max,
                format!(
                    "{} clamped inside [{}, {}] (to {limit})",
                    decl.name, decl.min, decl.max
                ),
                || format!("{got}"),
                "§9.1",
            );
            if got.to_bits() != limit.to_bits() && got >= decl.min && got <= decl.max {
                c.measured(format!(
                    "note: {} clamped to {got}, not to its declared limit {limit}",
                    decl.name
                ));
            }
        } else {
            c.expect(
                !bit && got.to_bits() == sent_v.to_bits(),
                format!(
                    "{} echoed bit-identical ({sent_v}, {:#010x}) with its bit clear",
                    decl.name,
                    sent_v.to_bits()
                ),
                || format!("{got} ({:#010x}), bit {}", got.to_bits(), bit as u8),
                "§5 ParamsApplied, §9.1",
            );
        }
    }
    let answered = p.s.frames()[from..]
        .iter()
        .find(|f| f.ack_seq() == Some(sent.seq))
        .map(|f| f.at)
        .unwrap_or(sent.at);
    let ready = p.ready_after(from, answered)?;
    c.expect(
        ready.is_some(),
        format!(
            "Ready (or a heartbeat saying Ready) within {} ms of ParamsApplied",
            p.ready_timeout.as_millis()
        ),
        || "none".into(),
        "§8, §9.1",
    );
    Ok(ready.filter(|_| c.failures.len() == failures))
}

/// Sends SetParams(`values`), expects Nack `code`, and checks nothing followed it before the
/// answer to a barrier query (no ParamsApplied, no Ready: the set was not applied).
fn refused(
    p: &mut Probe,
    c: &mut Check,
    values: &[f32],
    code: NackCode,
    what: &str,
) -> Result<(), SessionError> {
    let (_, answer) = p.set_params(values)?;
    let ok = c.expect(
        is_nack(answer.as_ref(), code),
        format!("Nack {code:?} to SetParams with {what}"),
        || describe(answer.as_ref()),
        "§8, §9.1",
    );
    if !ok {
        return Ok(());
    }
    let after = p.s.mark();
    p.sync()?;
    let caused: Vec<String> = p.s.frames()[after..]
        .iter()
        .filter(|f| matches!(f.msg, RobotMsg::Ready | RobotMsg::ParamsApplied { .. }))
        .map(|f| super::describe_msg(&f.msg))
        .collect();
    c.expect(
        caused.is_empty(),
        format!("a refused SetParams ({what}) has no effect"),
        || format!("{} after the Nack", caused.join(", ")),
        "§7.3, §9.1",
    );
    Ok(())
}

/// `retry-idempotence`: a resent SetParams gets the same ParamsApplied (and Ready again);
/// a resent StartEpisode gets the same Ack and does not start a second episode; on v2 also
/// with a GetStatus and a Heartbeat between the command and its retry.
pub fn retry_idempotence(p: &mut Probe) -> Result<Check, SessionError> {
    let mut c = Check::new(CheckId::RetryIdempotence);
    let defaults = p.defaults();
    let from = p.s.mark();
    let (sent, first) = p.set_params(&defaults)?;
    if !matches!(first.map(|a| a.msg), Some(RobotMsg::ParamsApplied { .. })) {
        c.fail("ParamsApplied", describe(first.as_ref()), "§4 SetParams");
        return Ok(c);
    }
    p.ready_after(from, Instant::now())?;
    let again_from = p.s.mark();
    let resent = p.s.resend(&sent)?;
    let again = p.s.answer_from(again_from, &resent, ANSWER_TIMEOUT)?;
    let same = matches!((first, again), (Some(a), Some(b)) if a.msg == b.msg);
    c.expect(
        same,
        format!(
            "the same ParamsApplied (ack_seq {}) to the resent SetParams",
            sent.seq
        ),
        || describe(again.as_ref()),
        "§7.4",
    );
    if same {
        let ready = p.s.wait_ready(again_from, Duration::from_secs(1))?;
        c.expect(
            ready.is_some(),
            "Ready again after the retried SetParams's answer (state Ready)",
            || "no Ready within 1 s".into(),
            "§7.4",
        );
    }
    retried_episode(p, &mut c, false)?;
    if p.v2() {
        retried_episode(p, &mut c, true)?;
        c.claim("SetParams and StartEpisode retries answered from the store, also across a GetStatus; one episode each");
    } else {
        c.claim("SetParams and StartEpisode retries answered from the store; one episode");
    }
    Ok(c)
}

/// Starts a short episode, resends its StartEpisode (after a GetStatus and a Heartbeat if
/// `interleave`), and checks the retry was answered with the same Ack and ran nothing more.
fn retried_episode(p: &mut Probe, c: &mut Check, interleave: bool) -> Result<(), SessionError> {
    let ep = p.start(SHORT_EPISODE)?;
    let ack = p.answer(&ep)?;
    if !c.expect(
        is_ack(ack.as_ref()),
        "Ack to StartEpisode",
        || describe(ack.as_ref()),
        "§9.2",
    ) {
        return Ok(());
    }
    let between = if interleave {
        p.status()?;
        p.s.send(&HostMsg::Heartbeat { host_time_ms: 0 })?;
        " after a GetStatus and a Heartbeat"
    } else {
        ""
    };
    let retry_from = p.s.mark();
    let resent = p.s.resend(&ep.sent)?;
    let again = p.s.answer_from(retry_from, &resent, ANSWER_TIMEOUT)?;
    c.expect(
        is_ack(again.as_ref()),
        format!("Ack (the stored answer) to the StartEpisode resent{between}"),
        || describe(again.as_ref()),
        "§7.4",
    );
    let deadline = Instant::now() + p.step_budget(ep.max_steps);
    let end = p.wait_end(&ep, deadline)?;
    let Some((end_at, _)) = end else {
        c.fail(
            "the episode's EpisodeEnd",
            format!("none within {} ms", p.step_budget(ep.max_steps).as_millis()),
            "§9.2",
        );
        return Ok(());
    };
    let end_time = p.s.frames()[end_at].at;
    p.ready_after(end_at, end_time)?;
    // A second episode started by the retry would show within a few more steps.
    let grace = (p.step_period() * 3).max(Duration::from_millis(100));
    p.s.idle_until(Instant::now() + grace)?;
    check_single_run(p, c, &ep, between);
    Ok(())
}

/// Exactly one EpisodeEnd and Steps 0..max_steps each once for `ep`.
fn check_single_run(p: &Probe, c: &mut Check, ep: &Episode, between: &str) {
    let frames = p.s.frames();
    let ends = frames[ep.from..]
        .iter()
        .filter(|f| {
            super::as_end(&f.msg).is_some_and(|e| e.trial == ep.trial && e.episode == ep.episode)
        })
        .count();
    let steps = p.steps(ep, ep.from, frames.len());
    let indices_once = steps.len() == ep.max_steps as usize
        && steps
            .iter()
            .enumerate()
            .all(|(k, (_, s))| s.step == k as u32);
    c.expect(
        ends == 1 && indices_once,
        format!(
            "one episode for a StartEpisode and its retry{between}: one EpisodeEnd, Steps 0..{} once each",
            ep.max_steps - 1
        ),
        || format!("{ends} EpisodeEnd(s), {} Steps", steps.len()),
        "§7.4",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_outside_limits_are_found_for_any_finite_limit() {
        assert_eq!(above(4.0), Some(8.0));
        assert_eq!(below(0.5), Some(-0.5));
        assert_eq!(below(-0.4), Some(-1.4));
        assert_eq!(above(0.0), Some(1.0));
        assert_eq!(above(f32::MAX), None);
        assert_eq!(below(f32::MIN), None);
        let big = f32::MAX / 1.5;
        assert!(above(big).is_some_and(|v| v > big && v.is_finite()));
        assert!(next_up(-1.0) > -1.0);
    }
}
