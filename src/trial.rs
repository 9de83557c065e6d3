//! Trials: their states, what one episode left behind, and the frozen (stored) view of a
//! trial that samplers, pruners and exports read.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::space::Params;

/// Where a trial is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TrialState {
    /// Parameters sent to the robot; episodes under way.
    Running,
    /// Finished with a value.
    Complete,
    /// Stopped early (poor performance or a safety stop); see its prune reason.
    Pruned,
    /// Could not be evaluated (link lost, bad value, ...).
    Fail,
    /// Queued: enqueued by the user or re-queued after an interruption; the next `ask`
    /// takes it.
    Waiting,
}

impl TrialState {
    /// All states, in the order used for counts.
    pub const ALL: [TrialState; 5] = [
        TrialState::Running,
        TrialState::Complete,
        TrialState::Pruned,
        TrialState::Fail,
        TrialState::Waiting,
    ];

    /// The stored name: `RUNNING`, `COMPLETE`, `PRUNED`, `FAIL` or `WAITING`.
    pub fn as_str(self) -> &'static str {
        match self {
            TrialState::Running => "RUNNING",
            TrialState::Complete => "COMPLETE",
            TrialState::Pruned => "PRUNED",
            TrialState::Fail => "FAIL",
            TrialState::Waiting => "WAITING",
        }
    }

    /// Parses a stored name (case-insensitive).
    pub fn parse(s: &str) -> Option<TrialState> {
        TrialState::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
    }

    /// Whether the trial is over (complete, pruned or failed) and can no longer change.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            TrialState::Complete | TrialState::Pruned | TrialState::Fail
        )
    }
}

impl fmt::Display for TrialState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TrialState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        TrialState::parse(s).ok_or_else(|| {
            format!(
                "unknown trial state {s:?}; expected RUNNING, COMPLETE, PRUNED, FAIL or WAITING"
            )
        })
    }
}

/// Whether the study maximises or minimises the trial value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Larger values are better (e.g. episode return).
    Maximize,
    /// Smaller values are better (e.g. energy per metre).
    Minimize,
}

impl Direction {
    /// `maximize` or `minimize`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Maximize => "maximize",
            Direction::Minimize => "minimize",
        }
    }

    /// Parses `maximize` / `minimize` (case-insensitive).
    pub fn parse(s: &str) -> Option<Direction> {
        match s.to_ascii_lowercase().as_str() {
            "maximize" => Some(Direction::Maximize),
            "minimize" => Some(Direction::Minimize),
            _ => None,
        }
    }

    /// Whether `a` is strictly better than `b` in this direction.
    pub fn is_better(self, a: f64, b: f64) -> bool {
        match self {
            Direction::Maximize => a > b,
            Direction::Minimize => a < b,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Direction::parse(s)
            .ok_or_else(|| format!("unknown direction {s:?}; expected maximize or minimize"))
    }
}

/// One finished episode of a trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeRecord {
    /// Episode index within the trial (0-based).
    pub episode: u32,
    /// The episode's return (sum of rewards).
    #[serde(rename = "return")]
    pub episode_return: f64,
    /// Control steps the episode ran.
    pub steps: u32,
    /// How it ended, as reported by the firmware or the daemon (e.g. `done`, `fell`,
    /// `aborted`).
    pub status: String,
    /// The seed the robot was given for this episode (`StartEpisode.seed`): with the same
    /// parameters and seed, a deterministic simulator replays the episode exactly. `None` in
    /// records written before seeds were stored.
    #[serde(default)]
    pub seed: Option<u64>,
}

/// A trial as stored: everything samplers, pruners and exports need to know about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrozenTrial {
    /// The trial's number within its study (0, 1, 2, ...).
    pub number: u64,
    /// Current state.
    pub state: TrialState,
    /// Parameters, internal representation (see [`crate::space`]).
    pub params: Params,
    /// The objective value (COMPLETE; optionally PRUNED).
    pub value: Option<f64>,
    /// Intermediate values by step.
    pub intermediate: BTreeMap<u64, f64>,
    /// Why the trial was pruned (e.g. `unsafe: roll 0.9 rad > 0.6`, `poor`).
    pub prune_reason: Option<String>,
    /// Finished episodes, by episode index.
    pub episodes: Vec<EpisodeRecord>,
    /// When the trial last started running (UTC, RFC 3339).
    pub started_at: Option<String>,
    /// When the trial finished (UTC, RFC 3339).
    pub finished_at: Option<String>,
    /// Free-form attributes (e.g. `unsafe_detail`, `fail_reason`, clamp reports).
    pub attrs: serde_json::Map<String, serde_json::Value>,
    /// The worker that runs (or last ran) the trial, e.g. `lab-pc:4242:/dev/ttyACM0`; `None`
    /// for trials run without a lease (library use) or not run yet.
    #[serde(default)]
    pub worker: Option<String>,
}

impl FrozenTrial {
    /// A trial with only a number, a state, parameters and a value: no intermediate
    /// values, episodes, times or attributes (for driving samplers and pruners in memory).
    pub fn new(number: u64, state: TrialState, params: Params, value: Option<f64>) -> Self {
        FrozenTrial {
            number,
            state,
            params,
            value,
            intermediate: BTreeMap::new(),
            prune_reason: None,
            episodes: Vec::new(),
            started_at: None,
            finished_at: None,
            attrs: serde_json::Map::new(),
            worker: None,
        }
    }

    /// The intermediate value at the highest step, if any.
    pub fn last_intermediate(&self) -> Option<(u64, f64)> {
        self.intermediate.iter().next_back().map(|(&s, &v)| (s, v))
    }

    /// Whether the trial is over.
    pub fn is_finished(&self) -> bool {
        self.state.is_finished()
    }

    /// Whether the trial was stopped for breaking a limit: state PRUNED, prune reason
    /// [`UNSAFE_REASON`] or starting with `unsafe:` or `unsafe `.
    pub fn is_unsafe(&self) -> bool {
        self.state == TrialState::Pruned
            && self.prune_reason.as_deref().is_some_and(|r| {
                r == UNSAFE_REASON
                    || r.strip_prefix(UNSAFE_REASON)
                        .is_some_and(|rest| rest.starts_with(':') || rest.starts_with(' '))
            })
    }

    /// The excess recorded in the trial's [`UNSAFE_ATTR`] attribute, if it has a number
    /// there (each sampler decides what a missing one counts as).
    pub fn violation_excess(&self) -> Option<f64> {
        self.attrs
            .get(UNSAFE_ATTR)
            .and_then(|u| u.get("excess"))
            .and_then(serde_json::Value::as_f64)
    }
}

/// The prune reason of a trial stopped for breaking a limit: the daemon's safety envelope,
/// the firmware's own limits, or a library user's constraint
/// ([`crate::study::Study::tell_unsafe`]). Such trials are constraint violations to the
/// samplers and never serve as reference to the pruners; see [`FrozenTrial::is_unsafe`].
pub const UNSAFE_REASON: &str = "unsafe";

/// The trial attribute describing an unsafe trial's violation (a [`ConstraintViolation`]
/// as JSON); samplers read its `excess` (see [`FrozenTrial::violation_excess`]).
pub const UNSAFE_ATTR: &str = "unsafe";

/// How a trial broke a limit: what an unsafe trial records in its [`UNSAFE_ATTR`]
/// attribute, whoever stopped it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConstraintViolation {
    /// Who found it: `envelope` (the daemon's safety envelope), `firmware`, or `user` (a
    /// library user's own check, the default).
    pub source: String,
    /// The limit's name, e.g. `max_roll_deg`.
    pub limit: String,
    /// The measured value, in the limit's units (NaN when there was no number; stored as
    /// null).
    pub value: f64,
    /// The limit's value.
    pub threshold: f64,
    /// How far past the limit, in its units (see [`excess_past`]). Samplers steer away from
    /// large excesses first; a non-finite one is stored as null and read as 1.
    pub excess: f64,
    /// The episode it happened in, if the evaluation has episodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub episode: Option<u32>,
    /// The step it happened at, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
}

impl ConstraintViolation {
    /// Limit `limit` broken by a measured `value` against its `threshold`: source `user`,
    /// excess [`excess_past`]`(value, threshold)`, no episode or step.
    pub fn new(limit: impl Into<String>, value: f64, threshold: f64) -> ConstraintViolation {
        ConstraintViolation {
            source: "user".into(),
            limit: limit.into(),
            value,
            threshold,
            excess: excess_past(value, threshold),
            episode: None,
            step: None,
        }
    }

    /// The same, found by `source`.
    pub fn from_source(self, source: impl Into<String>) -> ConstraintViolation {
        ConstraintViolation {
            source: source.into(),
            ..self
        }
    }

    /// The same, at `step` of `episode`.
    pub fn at(self, episode: u32, step: u64) -> ConstraintViolation {
        ConstraintViolation {
            episode: Some(episode),
            step: Some(step),
            ..self
        }
    }

    /// The same with another excess, for limits whose distance is not `|value − threshold|`
    /// (e.g. normalised by the limit's scale).
    pub fn with_excess(self, excess: f64) -> ConstraintViolation {
        ConstraintViolation { excess, ..self }
    }

    /// The [`UNSAFE_ATTR`] attribute value.
    pub fn to_attr(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a violation serialises")
    }
}

impl fmt::Display for ConstraintViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} = {} (limit {})",
            self.limit, self.value, self.threshold
        )
    }
}

/// How far `value` is past `threshold`: `|value − threshold|`, infinite when `value` is NaN
/// (no number is as bad as it gets).
pub fn excess_past(value: f64, threshold: f64) -> f64 {
    if value.is_nan() {
        f64::INFINITY
    } else {
        (value - threshold).abs()
    }
}

/// The current UTC time as RFC 3339 with milliseconds, e.g. `2024-05-01T12:34:56.789Z`.
pub fn now_utc() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format_utc(d.as_secs() as i64, d.subsec_millis())
}

/// Formats seconds since the Unix epoch (plus milliseconds) as RFC 3339 UTC.
pub fn format_utc(secs: i64, millis: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses what [`format_utc`] writes (`2024-05-01T12:34:56.789Z`; the fraction optional,
/// any number of its digits) into milliseconds since the Unix epoch; `None` otherwise.
pub fn parse_utc(text: &str) -> Option<i64> {
    let t = text.strip_suffix('Z')?;
    let (date, time) = t.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut h = hms.splitn(3, ':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (h.next()??, h.next()??, h.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    if !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let millis = format!("{frac:0<3}")[..3].parse::<i64>().ok()?;
    Some(((days_from_civil(y, m, day) * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + millis)
}

/// (year, month, day) in the proleptic Gregorian calendar → days since 1970-01-01 (Howard
/// Hinnant's algorithm; the inverse of [`civil_from_days`]).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_round_trip() {
        for s in TrialState::ALL {
            assert_eq!(TrialState::parse(s.as_str()), Some(s));
            assert_eq!(s.as_str().parse::<TrialState>(), Ok(s));
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert_eq!(TrialState::parse("complete"), Some(TrialState::Complete));
        assert!("DONE".parse::<TrialState>().unwrap_err().contains("DONE"));
        assert!(TrialState::Pruned.is_finished() && !TrialState::Waiting.is_finished());
    }

    #[test]
    fn direction_serde_and_order() {
        assert_eq!(
            serde_json::to_string(&Direction::Minimize).unwrap(),
            "\"minimize\""
        );
        let d: Direction = serde_json::from_str("\"maximize\"").unwrap();
        assert_eq!(d, Direction::Maximize);
        assert!(Direction::Maximize.is_better(2.0, 1.0));
        assert!(Direction::Minimize.is_better(1.0, 2.0));
        assert!(!Direction::Minimize.is_better(1.0, 1.0));
        assert!("up".parse::<Direction>().is_err());
    }

    #[test]
    fn utc_parsing_inverts_formatting() {
        for (secs, ms) in [
            (0, 0),
            (1_714_566_896, 789),
            (951_782_400, 1),
            (4_102_444_799, 999),
        ] {
            let text = format_utc(secs, ms);
            assert_eq!(parse_utc(&text), Some(secs * 1000 + ms as i64), "{text}");
        }
        assert_eq!(parse_utc("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(parse_utc("1970-01-01T00:00:00.5Z"), Some(500));
        for bad in [
            "",
            "2024-05-01 12:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-05-01T12:00:00",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(format_utc(1_714_566_896, 789), "2024-05-01T12:34:56.789Z");
        assert_eq!(format_utc(-1, 0), "1969-12-31T23:59:59.000Z");
        let now = now_utc();
        assert_eq!(now.len(), 24, "{now}");
        assert!(now.ends_with('Z') && now.as_bytes()[10] == b'T', "{now}");
    }

    #[test]
    fn violations_record_what_the_samplers_read() {
        let v = ConstraintViolation::new("max_roll_deg", 41.0, 35.0).at(2, 17);
        assert_eq!(v.excess, 6.0);
        assert_eq!(
            v.to_attr(),
            serde_json::json!({
                "source": "user", "limit": "max_roll_deg", "value": 41.0,
                "threshold": 35.0, "excess": 6.0, "episode": 2, "step": 17,
            })
        );
        assert_eq!(v.to_string(), "max_roll_deg = 41 (limit 35)");
        let blind = ConstraintViolation::new("min_body_height_m", f64::NAN, 0.1).from_source("sim");
        assert_eq!(blind.excess, f64::INFINITY);
        let attr = blind.to_attr();
        assert_eq!(
            (attr["value"].is_null(), attr["excess"].is_null()),
            (true, true)
        );
        assert_eq!(attr["source"], "sim");
        assert!(attr.get("episode").is_none());

        let mut t = FrozenTrial::new(0, TrialState::Pruned, Params::new(), None);
        assert!(!t.is_unsafe() && t.violation_excess().is_none());
        t.prune_reason = Some(UNSAFE_REASON.into());
        t.attrs
            .insert(UNSAFE_ATTR.into(), v.with_excess(0.5).to_attr());
        assert!(t.is_unsafe());
        assert_eq!(t.violation_excess(), Some(0.5));
    }

    #[test]
    fn episode_serialises_return_key() {
        let e = EpisodeRecord {
            episode: 1,
            episode_return: 2.5,
            steps: 200,
            status: "done".into(),
            seed: Some(u64::MAX),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["return"], 2.5);
        assert_eq!(v["seed"], u64::MAX);
        let back: EpisodeRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        // Records written before seeds were stored still load.
        let old: EpisodeRecord =
            serde_json::from_str(r#"{"episode": 0, "return": 1.0, "steps": 5, "status": "done"}"#)
                .unwrap();
        assert_eq!(old.seed, None);
    }
}
