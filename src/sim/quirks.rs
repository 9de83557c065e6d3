//! Deliberate misbehaviour of the simulated firmware (`gaittune sim --quirk NAME[=VALUE]`):
//! a firmware that breaks one rule of SPEC.md, behaves as an older or differently built
//! firmware would, or suffers a robot event on cue. Tests and `gaittune probe` use them to
//! show that the daemon survives, or that the probe catches, each one.
//!
//! | quirk | what the firmware does |
//! |---|---|
//! | `v1-only` | speaks protocol version 1 only: Nack UnsupportedVersion to Hello{2}, discards GetStatus |
//! | `limit=NAME:MIN:MAX` | clamps NAME to [MIN, MAX], narrower than declared (runtime limits; reported in the clamp mask, as SPEC §9.1 allows) |
//! | `reboot-at-step=N` | reboots (new boot id, Idle, no parameters, no EpisodeEnd) when an episode reaches step N; once per process |
//! | `trip-in-reset=N` | at the end of its Nth reset after boot, trips BodyHeight outside an episode instead of reporting Ready |
//! | `keep-output-when-closed` | output written while no host has the pty open stays queued for the next host (as some USB bridges do), instead of being discarded |
//! | `stumble-on-abort` | on Abort, runs one more step whose roll reads 0.7 rad before stopping |
//! | `no-ready` | never sends Ready frames (its heartbeats still say Ready) |
//! | `no-clamp-bit` | clamps without setting the clamp-mask bit (breaks §9.1) |
//! | `no-retry-store` | executes a retried command again (breaks §7.4) |
//! | `no-watchdog` | never trips its watchdog (breaks §10.4) |
//! | `late-estop=N` | acknowledges EStop but runs N more steps before stopping (breaks §10.1) |
//! | `no-latch` | EStop stops the episode but does not latch (breaks §10.1) |
//! | `ignore-abort` | acknowledges Abort and keeps running (breaks §4 Abort) |
//! | `bad-schema-hash` | announces a schema hash that does not match its declarations (breaks §6) |
//! | `slow-heartbeat=MS` | sends its heartbeats every MS ms (SPEC §7.5 asks for at most 250) |
//! | `step-before-ack` | sends an episode's first Step before StartEpisode's Ack (breaks §7.3) |
//! | `miscount-steps` | reports one step more in EpisodeEnd than it sent (breaks §5 EpisodeEnd) |

use std::time::Duration;

/// The quirks a simulated firmware runs with (all off by default: a conforming firmware).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Quirks {
    /// `v1-only`.
    pub v1_only: bool,
    /// `limit=NAME:MIN:MAX`, as (name, min, max).
    pub runtime_limits: Vec<(String, f32, f32)>,
    /// `reboot-at-step=N`.
    pub reboot_at_step: Option<u32>,
    /// `trip-in-reset=N`.
    pub trip_in_reset: Option<u32>,
    /// `keep-output-when-closed`.
    pub keep_output_when_closed: bool,
    /// `stumble-on-abort`.
    pub stumble_on_abort: bool,
    /// `no-ready`.
    pub no_ready: bool,
    /// `no-clamp-bit`.
    pub no_clamp_bit: bool,
    /// `no-retry-store`.
    pub no_retry_store: bool,
    /// `no-watchdog`.
    pub no_watchdog: bool,
    /// `late-estop=N`.
    pub late_estop_steps: u32,
    /// `no-latch`.
    pub no_latch: bool,
    /// `ignore-abort`.
    pub ignore_abort: bool,
    /// `bad-schema-hash`.
    pub bad_schema_hash: bool,
    /// `slow-heartbeat=MS`.
    pub heartbeat_period: Option<Duration>,
    /// `step-before-ack`.
    pub step_before_ack: bool,
    /// `miscount-steps`.
    pub miscount_steps: bool,
}

/// Every quirk name, for messages.
pub const QUIRK_NAMES: &[&str] = &[
    "v1-only",
    "limit=NAME:MIN:MAX",
    "reboot-at-step=N",
    "trip-in-reset=N",
    "keep-output-when-closed",
    "stumble-on-abort",
    "no-ready",
    "no-clamp-bit",
    "no-retry-store",
    "no-watchdog",
    "late-estop=N",
    "no-latch",
    "ignore-abort",
    "bad-schema-hash",
    "slow-heartbeat=MS",
    "step-before-ack",
    "miscount-steps",
];

impl Quirks {
    /// Parses `--quirk` values; the error names the bad one and lists the known ones.
    pub fn parse<S: AsRef<str>>(specs: &[S]) -> Result<Quirks, String> {
        let mut q = Quirks::default();
        for spec in specs {
            q.add(spec.as_ref())?;
        }
        Ok(q)
    }

    fn add(&mut self, spec: &str) -> Result<(), String> {
        let (name, value) = match spec.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (spec.trim(), None),
        };
        let bad = |why: &str| {
            format!(
                "--quirk {spec:?}: {why} (known quirks: {})",
                QUIRK_NAMES.join(", ")
            )
        };
        let number = |v: Option<&str>| -> Result<u32, String> {
            v.ok_or_else(|| bad("needs a value"))?
                .parse::<u32>()
                .map_err(|_| bad("the value must be a whole number"))
        };
        let flag = |v: Option<&str>| -> Result<bool, String> {
            match v {
                None => Ok(true),
                Some(_) => Err(bad("takes no value")),
            }
        };
        match name {
            "v1-only" => self.v1_only = flag(value)?,
            "limit" => {
                let v = value.ok_or_else(|| bad("needs NAME:MIN:MAX"))?;
                let parts: Vec<&str> = v.split(':').collect();
                let [pname, lo, hi] = parts[..] else {
                    return Err(bad("needs NAME:MIN:MAX"));
                };
                let lo: f32 = lo.parse().map_err(|_| bad("MIN must be a number"))?;
                let hi: f32 = hi.parse().map_err(|_| bad("MAX must be a number"))?;
                if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
                    return Err(bad("MIN and MAX must be finite with MIN <= MAX"));
                }
                self.runtime_limits.push((pname.to_string(), lo, hi));
            }
            "reboot-at-step" => self.reboot_at_step = Some(number(value)?),
            "trip-in-reset" => self.trip_in_reset = Some(number(value)?.max(1)),
            "keep-output-when-closed" => self.keep_output_when_closed = flag(value)?,
            "stumble-on-abort" => self.stumble_on_abort = flag(value)?,
            "no-ready" => self.no_ready = flag(value)?,
            "no-clamp-bit" => self.no_clamp_bit = flag(value)?,
            "no-retry-store" => self.no_retry_store = flag(value)?,
            "no-watchdog" => self.no_watchdog = flag(value)?,
            "late-estop" => self.late_estop_steps = number(value)?.max(1),
            "no-latch" => self.no_latch = flag(value)?,
            "ignore-abort" => self.ignore_abort = flag(value)?,
            "bad-schema-hash" => self.bad_schema_hash = flag(value)?,
            "slow-heartbeat" => {
                self.heartbeat_period = Some(Duration::from_millis(number(value)?.max(1) as u64))
            }
            "step-before-ack" => self.step_before_ack = flag(value)?,
            "miscount-steps" => self.miscount_steps = flag(value)?,
            _ => return Err(bad("unknown quirk")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quirks_parse_with_values_and_refuse_unknown_ones() {
        let q = Quirks::parse(&[
            "v1-only",
            "limit=kp:10:20",
            "late-estop=3",
            "slow-heartbeat=600",
        ])
        .unwrap();
        assert!(q.v1_only);
        assert_eq!(q.runtime_limits, vec![("kp".to_string(), 10.0, 20.0)]);
        assert_eq!(q.late_estop_steps, 3);
        assert_eq!(q.heartbeat_period, Some(Duration::from_millis(600)));
        for bad in [
            "warp-drive",
            "limit=kp:3",
            "limit=kp:5:1",
            "late-estop",
            "no-latch=1",
        ] {
            let e = Quirks::parse(&[bad]).unwrap_err();
            assert!(e.contains(bad) && e.contains("v1-only"), "{e}");
        }
    }
}
