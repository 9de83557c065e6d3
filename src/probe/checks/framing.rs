//! `lost-frame-recovery`: damaged frames are dropped silently (SPEC §2.5) and a command whose
//! answer was lost gets the same answer when resent (SPEC §7.4).

use firmware_protocol::{
    cobs_decode, cobs_encode, crc32, HostMsg, RobotMsg, MAX_FRAME, MAX_RAW_FRAME,
};

use super::{describe, describe_msg, ms, Check, CheckId, Probe, ANSWER_TIMEOUT};
use crate::probe::session::{frame_bytes, SessionError};

/// The raw frame (type ‖ seq ‖ payload ‖ crc) of `msg` with `seq`.
fn raw_frame(seq: u16, msg: &HostMsg) -> Vec<u8> {
    let wire = frame_bytes(seq, msg);
    let mut raw = [0u8; MAX_RAW_FRAME];
    let n = cobs_decode(&wire[..wire.len() - 1], &mut raw).expect("our own encoding");
    raw[..n].to_vec()
}

/// COBS-encodes `raw` and appends the delimiter.
fn stuff(raw: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; MAX_FRAME + 8];
    let n = cobs_encode(raw, &mut out).expect("fits");
    out.truncate(n);
    out.push(0);
    out
}

/// `raw` with its CRC recomputed after an edit.
fn reseal(mut raw: Vec<u8>) -> Vec<u8> {
    let body = raw.len() - 4;
    let crc = crc32(&raw[..body]);
    raw[body..].copy_from_slice(&crc.to_le_bytes());
    raw
}

/// The damaged frames, each with what is wrong with it.
fn damaged_frames(p: &mut Probe, probe_msg: &HostMsg) -> Vec<(&'static str, Vec<u8>)> {
    let mut bad_crc = raw_frame(p.s.take_seq(), probe_msg);
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0x01;

    let garbage: Vec<u8> = (0..40u8)
        .map(|i| i.wrapping_mul(37) | 1)
        .chain([0])
        .collect();

    // Over-long: a valid frame at its tail, so a receiver that keeps only the last bytes
    // (instead of discarding the whole run, rule 2) would answer it.
    let mut over_long = vec![0x5A; MAX_FRAME + 20];
    over_long.extend(frame_bytes(p.s.take_seq(), probe_msg));

    let mut unknown_type = raw_frame(p.s.take_seq(), probe_msg);
    unknown_type[0] = 0x7F;
    let mut other_direction = raw_frame(p.s.take_seq(), probe_msg);
    other_direction[0] = 0x84;
    let mut trailing = raw_frame(p.s.take_seq(), probe_msg);
    trailing.insert(trailing.len() - 4, 0xEE);

    vec![
        ("a bad CRC", stuff(&bad_crc)),
        ("garbage bytes", garbage),
        ("an over-long frame", over_long),
        ("bad COBS", vec![0x09, 0x01, 0x02, 0x00]),
        ("an unknown type (0x7F)", stuff(&reseal(unknown_type))),
        (
            "a robot-direction type (0x84)",
            stuff(&reseal(other_direction)),
        ),
        ("trailing bytes", stuff(&reseal(trailing))),
    ]
}

/// `lost-frame-recovery`.
pub fn lost_frame_recovery(p: &mut Probe) -> Result<Check, SessionError> {
    let mut c = Check::new(CheckId::LostFrameRecovery);
    let probe_msg = if p.params.is_empty() {
        HostMsg::Hello {
            protocol_version: p.info.protocol_version,
        }
    } else {
        HostMsg::GetParamInfo { index: 0 }
    };
    let from = p.s.mark();
    let damaged = damaged_frames(p, &probe_msg);
    for (_, bytes) in &damaged {
        p.s.write_raw(bytes)?;
    }
    let (sent, answer) = p.s.request(&probe_msg, ANSWER_TIMEOUT)?;
    let Some(answer) = answer else {
        c.fail(
            "the next valid command answered normally after damaged frames",
            describe(None),
            "§2.5",
        );
        return Ok(c);
    };
    let answered = p.s.frames()[from..]
        .iter()
        .filter(|f| f.ack_seq().is_some_and(|s| s != sent.seq))
        .map(|f| describe_msg(&f.msg))
        .collect::<Vec<_>>();
    let kinds: Vec<&str> = damaged.iter().map(|d| d.0).collect();
    c.expect(
        answered.is_empty(),
        format!("no answer to frames with {}", kinds.join(", ")),
        || format!("answered: {}", answered.join(", ")),
        "§2.5",
    );
    c.expect(
        matches!(
            (probe_msg, answer.msg),
            (
                HostMsg::GetParamInfo { .. },
                RobotMsg::ParamInfo { index: 0, .. }
            ) | (HostMsg::Hello { .. }, RobotMsg::Info { .. })
        ),
        "the normal answer to the next valid command",
        || describe_msg(&answer.msg),
        "§2.5",
    );
    c.measured(format!(
        "{} damaged frames sent; the next command answered in {}",
        damaged.len(),
        ms(answer.at.saturating_duration_since(sent.at))
    ));
    c.claim("all ignored silently");

    let index = p.params.len().saturating_sub(1) as u8;
    let lost_msg = if p.params.is_empty() {
        probe_msg
    } else {
        HostMsg::GetParamInfo { index }
    };
    let (sent, first) = p.s.request(&lost_msg, ANSWER_TIMEOUT)?;
    let again_from = p.s.mark();
    let resent = p.s.resend(&sent)?;
    let again = p.s.answer_from(again_from, &resent, ANSWER_TIMEOUT)?;
    c.expect(
        matches!((first, again), (Some(a), Some(b)) if a.msg == b.msg),
        format!(
            "the same answer (ack_seq {}) to a command resent after its answer was lost",
            sent.seq
        ),
        || {
            format!(
                "first {}, then {}",
                describe(first.as_ref()),
                describe(again.as_ref())
            )
        },
        "§7.4",
    );
    c.claim("a command resent after its answer was lost got the same answer");
    Ok(c)
}
