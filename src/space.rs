//! The search space: which controller parameters are tuned and over which values.
//!
//! Every parameter has a [`Distribution`]: a float range (optionally log-scaled or on a step
//! grid), an integer range (optionally log-scaled or stepped), or a list of categorical
//! choices. Internally every value is an `f64` ([`Params`]): the float value, the integer
//! value, or the *index* of the categorical choice. [`SearchSpace::external`] turns it back
//! into what the user wrote (a JSON number, integer or the choice itself), and
//! [`SearchSpace::firmware_value`] into the number the firmware receives.
//!
//! **Order.** A search space is always ordered by parameter name (byte-wise). The `toml`
//! crate (without its `preserve_order` feature) hands tables over as sorted maps, and a
//! canonical order also means that reordering the `[space.*]` tables of a config does not
//! change the space a stored study is compared against.
//!
//! ```
//! use gaittune::space::SearchSpace;
//! let table: toml::Table = toml::from_str(r#"
//!     [freq_hz]
//!     type = "float"
//!     low = 0.5
//!     high = 4.0
//!     step = 0.1
//!     [gait]
//!     type = "categorical"
//!     choices = ["walk", "trot"]
//! "#).unwrap();
//! let space = SearchSpace::from_toml(&table).unwrap();
//! assert_eq!(space.names().collect::<Vec<_>>(), ["freq_hz", "gait"]);
//! assert_eq!(space.external("gait", 1.0), serde_json::json!("trot"));
//! assert_eq!(space.firmware_value("gait", 1.0), 1.0);
//! assert_eq!(space.firmware_range("freq_hz"), (0.5, 4.0));
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Parameter values in the internal representation: name → float value, integer value, or
/// categorical choice index.
pub type Params = BTreeMap<String, f64>;

/// Relative tolerance used when checking that a float lies on its step grid.
const GRID_TOLERANCE: f64 = 1e-9;

/// One categorical choice: a number or a string (as written in the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Choice {
    /// A numeric choice; the firmware receives this number.
    Number(f64),
    /// A named choice; the firmware receives its index.
    Text(String),
}

impl Choice {
    /// The choice as JSON (a number or a string).
    pub fn to_json(&self) -> Value {
        match self {
            Choice::Number(x) => json_number(*x),
            Choice::Text(s) => Value::String(s.clone()),
        }
    }
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Choice::Number(x) => write!(f, "{x}"),
            Choice::Text(s) => write!(f, "{s:?}"),
        }
    }
}

/// The values one parameter may take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Distribution {
    /// A real number in `[low, high]`, log-uniform if `log`, on the grid `low + k·step` if
    /// `step` is set.
    Float {
        /// Lower bound (inclusive).
        low: f64,
        /// Upper bound (inclusive).
        high: f64,
        /// Sample on a log scale (needs `low > 0`; incompatible with `step`).
        log: bool,
        /// Discretisation step, if any.
        step: Option<f64>,
    },
    /// An integer in `[low, high]` on the grid `low + k·step`, log-uniform if `log`.
    Int {
        /// Lower bound (inclusive).
        low: i64,
        /// Upper bound (inclusive).
        high: i64,
        /// Grid step (≥ 1; must be 1 with `log`).
        step: i64,
        /// Sample on a log scale (needs `low ≥ 1`).
        log: bool,
    },
    /// One of a list of choices; internally the choice's index.
    Categorical {
        /// The choices, all numbers or all strings.
        choices: Vec<Choice>,
    },
}

/// A search space that failed validation; the message names the parameter and the fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct SpaceError(pub String);

fn json_number(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// Whether `x` is within a relative tolerance of an integer; returns that integer.
fn near_integer(x: f64) -> Option<f64> {
    let r = x.round();
    ((x - r).abs() <= GRID_TOLERANCE * x.abs().max(1.0)).then_some(r)
}

impl Distribution {
    /// Short name of the kind: `float`, `int` or `categorical`.
    pub fn kind(&self) -> &'static str {
        match self {
            Distribution::Float { .. } => "float",
            Distribution::Int { .. } => "int",
            Distribution::Categorical { .. } => "categorical",
        }
    }

    /// Checks the distribution; errors are phrased without the parameter name (the caller
    /// prefixes it).
    fn check(&self) -> Result<(), String> {
        match *self {
            Distribution::Float {
                low,
                high,
                log,
                step,
            } => {
                if !low.is_finite() || !high.is_finite() {
                    return Err(format!("low ({low}) and high ({high}) must be finite"));
                }
                if low > high {
                    return Err(format!("low ({low}) must be <= high ({high})"));
                }
                if log && low <= 0.0 {
                    return Err(format!("log scale needs low > 0 (low is {low})"));
                }
                if let Some(step) = step {
                    if log {
                        return Err(
                            "step cannot be combined with log = true (as in Optuna); remove one"
                                .into(),
                        );
                    }
                    if !(step.is_finite() && step > 0.0) {
                        return Err(format!("step must be > 0 (step is {step})"));
                    }
                    let n = (high - low) / step;
                    if near_integer(n).is_none() {
                        let fixed = low + n.floor() * step;
                        return Err(format!(
                            "high - low ({}) is not a multiple of step ({step}); set high = {fixed} or change step",
                            high - low
                        ));
                    }
                }
                Ok(())
            }
            Distribution::Int {
                low,
                high,
                step,
                log,
            } => {
                if low > high {
                    return Err(format!("low ({low}) must be <= high ({high})"));
                }
                if step < 1 {
                    return Err(format!("step must be > 0 (step is {step})"));
                }
                if log && low < 1 {
                    return Err(format!("log scale needs low > 0 (low is {low})"));
                }
                if log && step != 1 {
                    return Err(format!(
                        "an int with log = true needs step = 1 (step is {step}), as in Optuna"
                    ));
                }
                let span = high as i128 - low as i128;
                if span % step as i128 != 0 {
                    let fixed = low as i128 + span / step as i128 * step as i128;
                    return Err(format!(
                        "high - low ({span}) is not a multiple of step ({step}); set high = {fixed} or change step"
                    ));
                }
                Ok(())
            }
            Distribution::Categorical { ref choices } => {
                if choices.is_empty() {
                    return Err("categorical needs at least one choice".into());
                }
                let numbers = choices
                    .iter()
                    .filter(|c| matches!(c, Choice::Number(_)))
                    .count();
                if numbers != 0 && numbers != choices.len() {
                    return Err(
                        "categorical choices must be all numbers or all strings (the firmware receives the number, or the index of a string)".into(),
                    );
                }
                for (i, c) in choices.iter().enumerate() {
                    if let Choice::Number(x) = c {
                        if !x.is_finite() {
                            return Err(format!("choice {x} is not a finite number"));
                        }
                    }
                    if choices[..i].contains(c) {
                        return Err(format!("choice {c} is listed twice"));
                    }
                }
                Ok(())
            }
        }
    }

    /// Whether `internal` is a value of this distribution (in bounds, on the grid, an
    /// integer where one is needed).
    pub fn contains(&self, internal: f64) -> bool {
        if !internal.is_finite() {
            return false;
        }
        match *self {
            Distribution::Float {
                low, high, step, ..
            } => {
                let tol = GRID_TOLERANCE * (high - low).abs().max(low.abs()).max(high.abs());
                if internal < low - tol || internal > high + tol {
                    return false;
                }
                match step {
                    None => true,
                    Some(step) => near_integer((internal - low) / step).is_some(),
                }
            }
            Distribution::Int {
                low, high, step, ..
            } => {
                internal.fract() == 0.0
                    && internal >= low as f64
                    && internal <= high as f64
                    && (internal as i64 - low) % step == 0
            }
            Distribution::Categorical { ref choices } => {
                internal.fract() == 0.0 && internal >= 0.0 && internal < choices.len() as f64
            }
        }
    }

    /// Brings any finite value to the nearest value of the distribution: clamped to the
    /// bounds and rounded to the step / integer / index grid. Non-finite input gives `low`
    /// (or index 0).
    pub fn snap(&self, x: f64) -> f64 {
        match *self {
            Distribution::Float {
                low, high, step, ..
            } => {
                if !x.is_finite() {
                    return low;
                }
                let x = x.clamp(low, high);
                match step {
                    None => x,
                    Some(step) => {
                        let k = ((x - low) / step).round();
                        (low + k * step).clamp(low, high)
                    }
                }
            }
            Distribution::Int {
                low, high, step, ..
            } => {
                if !x.is_finite() {
                    return low as f64;
                }
                let x = x.clamp(low as f64, high as f64);
                let k = ((x - low as f64) / step as f64).round();
                (low as f64 + k * step as f64).clamp(low as f64, high as f64)
            }
            Distribution::Categorical { ref choices } => {
                if !x.is_finite() {
                    return 0.0;
                }
                x.round().clamp(0.0, (choices.len() - 1) as f64)
            }
        }
    }

    /// The value as the user sees it: a JSON number for floats, a JSON integer for ints, the
    /// choice itself for categoricals (`null` if the index is out of range).
    pub fn external(&self, internal: f64) -> Value {
        match self {
            Distribution::Float { .. } => json_number(internal),
            Distribution::Int { .. } => Value::from(internal.round() as i64),
            Distribution::Categorical { choices } => {
                choice_at(choices, internal).map_or(Value::Null, Choice::to_json)
            }
        }
    }

    /// The internal value of a user-facing (JSON) value, if it is a value of this
    /// distribution.
    pub fn internal(&self, external: &Value) -> Option<f64> {
        let x = match self {
            Distribution::Float { .. } | Distribution::Int { .. } => external.as_f64()?,
            Distribution::Categorical { choices } => {
                let i = choices.iter().position(|c| match (c, external) {
                    (Choice::Number(a), Value::Number(b)) => Some(*a) == b.as_f64(),
                    (Choice::Text(a), Value::String(b)) => a == b,
                    _ => false,
                })?;
                i as f64
            }
        };
        self.contains(x).then_some(x)
    }

    /// The number the firmware receives: the float or integer value, the numeric choice, or
    /// the index of a string choice.
    pub fn firmware_value(&self, internal: f64) -> f64 {
        match self {
            Distribution::Categorical { choices } => match choice_at(choices, internal) {
                Some(Choice::Number(x)) => *x,
                _ => internal,
            },
            _ => internal,
        }
    }

    /// The smallest and largest number the firmware must accept for this parameter.
    pub fn firmware_range(&self) -> (f64, f64) {
        match *self {
            Distribution::Float { low, high, .. } => (low, high),
            Distribution::Int { low, high, .. } => (low as f64, high as f64),
            Distribution::Categorical { ref choices } => {
                let numbers: Vec<f64> = choices
                    .iter()
                    .filter_map(|c| match c {
                        Choice::Number(x) => Some(*x),
                        Choice::Text(_) => None,
                    })
                    .collect();
                if numbers.is_empty() {
                    (0.0, choices.len().saturating_sub(1) as f64)
                } else {
                    let lo = numbers.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = numbers.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    (lo, hi)
                }
            }
        }
    }

    /// Number of distinct values if the distribution is discrete (step grid, int,
    /// categorical); `None` for a continuous float range.
    pub fn cardinality(&self) -> Option<u64> {
        match *self {
            Distribution::Float {
                low, high, step, ..
            } => step.map(|s| ((high - low) / s).round() as u64 + 1),
            Distribution::Int {
                low, high, step, ..
            } => Some(((high as i128 - low as i128) / step as i128) as u64 + 1),
            Distribution::Categorical { ref choices } => Some(choices.len() as u64),
        }
    }

    /// A one-line description for messages, e.g. `float [0.5, 4] step 0.1`.
    pub fn describe(&self) -> String {
        match self {
            Distribution::Float {
                low,
                high,
                log,
                step,
            } => {
                let mut s = format!("float [{low}, {high}]");
                if *log {
                    s.push_str(" log");
                }
                if let Some(step) = step {
                    s.push_str(&format!(" step {step}"));
                }
                s
            }
            Distribution::Int {
                low,
                high,
                step,
                log,
            } => {
                let mut s = format!("int [{low}, {high}]");
                if *log {
                    s.push_str(" log");
                }
                if *step != 1 {
                    s.push_str(&format!(" step {step}"));
                }
                s
            }
            Distribution::Categorical { choices } => {
                let list: Vec<String> = choices.iter().map(Choice::to_string).collect();
                format!("categorical [{}]", list.join(", "))
            }
        }
    }
}

fn choice_at(choices: &[Choice], internal: f64) -> Option<&Choice> {
    if internal.fract() != 0.0 || internal < 0.0 {
        return None;
    }
    choices.get(internal as usize)
}

/// The kind of a parameter in the config (`type = "float" | "int" | "categorical"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawKind {
    /// `type = "float"`.
    Float,
    /// `type = "int"`.
    Int,
    /// `type = "categorical"`.
    Categorical,
}

/// A number as written in the config: TOML integer or float.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RawNumber {
    /// An integer literal.
    Int(i64),
    /// A float literal.
    Float(f64),
}

impl<'de> Deserialize<'de> for RawNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawNumber;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number (an integer or a float, e.g. 0.5, without quotes)")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawNumber, E> {
                Ok(RawNumber::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawNumber, E> {
                i64::try_from(v)
                    .map(RawNumber::Int)
                    .map_err(|_| E::custom(format!("{v} is too large for an integer")))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<RawNumber, E> {
                Ok(RawNumber::Float(v))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl RawNumber {
    fn as_f64(self) -> f64 {
        match self {
            RawNumber::Int(i) => i as f64,
            RawNumber::Float(x) => x,
        }
    }

    fn as_i64(self) -> Option<i64> {
        match self {
            RawNumber::Int(i) => Some(i),
            RawNumber::Float(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => Some(x as i64),
            RawNumber::Float(_) => None,
        }
    }
}

/// One `[space.NAME]` table as written in the config, before validation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawParam {
    /// `float`, `int` or `categorical`.
    #[serde(rename = "type")]
    pub kind: RawKind,
    /// Lower bound (float and int).
    pub low: Option<RawNumber>,
    /// Upper bound (float and int).
    pub high: Option<RawNumber>,
    /// Log scale (float and int; default false).
    pub log: Option<bool>,
    /// Grid step (float: none by default; int: 1 by default).
    pub step: Option<RawNumber>,
    /// The choices (categorical).
    pub choices: Option<Vec<Choice>>,
}

impl RawParam {
    /// Turns the raw table into a validated distribution; errors are prefixed with
    /// `space.NAME: `.
    pub fn to_distribution(&self, name: &str) -> Result<Distribution, SpaceError> {
        let err = |m: String| SpaceError(format!("space.{name}: {m}"));
        let not_for = |key: &str, kind: &str| {
            err(format!(
                "`{key}` does not apply to type = \"{kind}\"; remove it"
            ))
        };
        let dist = match self.kind {
            RawKind::Float | RawKind::Int => {
                if self.choices.is_some() {
                    return Err(not_for("choices", self.kind_str()));
                }
                let low = self.low.ok_or_else(|| err("`low` is missing".into()))?;
                let high = self.high.ok_or_else(|| err("`high` is missing".into()))?;
                let log = self.log.unwrap_or(false);
                if self.kind == RawKind::Float {
                    Distribution::Float {
                        low: low.as_f64(),
                        high: high.as_f64(),
                        log,
                        step: self.step.map(RawNumber::as_f64),
                    }
                } else {
                    let int = |key: &str, v: RawNumber| {
                        v.as_i64().ok_or_else(|| {
                            err(format!(
                                "{key} ({}) must be an integer for type = \"int\"",
                                v.as_f64()
                            ))
                        })
                    };
                    Distribution::Int {
                        low: int("low", low)?,
                        high: int("high", high)?,
                        step: match self.step {
                            Some(s) => int("step", s)?,
                            None => 1,
                        },
                        log,
                    }
                }
            }
            RawKind::Categorical => {
                for (key, present) in [
                    ("low", self.low.is_some()),
                    ("high", self.high.is_some()),
                    ("log", self.log.is_some()),
                    ("step", self.step.is_some()),
                ] {
                    if present {
                        return Err(not_for(key, "categorical"));
                    }
                }
                let choices = self.choices.clone().ok_or_else(|| {
                    err("categorical needs at least one choice (`choices = [...]`)".into())
                })?;
                Distribution::Categorical { choices }
            }
        };
        dist.check().map_err(err)?;
        Ok(dist)
    }

    fn kind_str(&self) -> &'static str {
        match self.kind {
            RawKind::Float => "float",
            RawKind::Int => "int",
            RawKind::Categorical => "categorical",
        }
    }
}

/// The `[space]` table as written in the config.
pub type RawSpace = BTreeMap<String, RawParam>;

/// A validated search space: parameters ordered by name, each with its distribution.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchSpace {
    params: Vec<(String, Distribution)>,
}

impl SearchSpace {
    /// Builds a space from (name, distribution) pairs, validating each; the result is
    /// ordered by name.
    pub fn new(
        params: impl IntoIterator<Item = (String, Distribution)>,
    ) -> Result<SearchSpace, SpaceError> {
        let mut params: Vec<(String, Distribution)> = params.into_iter().collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        for w in params.windows(2) {
            if w[0].0 == w[1].0 {
                return Err(SpaceError(format!(
                    "space.{}: the parameter is declared twice",
                    w[0].0
                )));
            }
        }
        for (name, dist) in &params {
            check_name(name)?;
            dist.check()
                .map_err(|m| SpaceError(format!("space.{name}: {m}")))?;
        }
        if params.is_empty() {
            return Err(SpaceError(
                "space: no parameters; add at least one [space.NAME] table".into(),
            ));
        }
        if params.len() > firmware_protocol::MAX_PARAMS {
            return Err(SpaceError(format!(
                "space: {} parameters, but the firmware protocol carries at most {}",
                params.len(),
                firmware_protocol::MAX_PARAMS
            )));
        }
        Ok(SearchSpace { params })
    }

    /// Validates the raw `[space]` table.
    pub fn from_raw(raw: &RawSpace) -> Result<SearchSpace, SpaceError> {
        let mut params = Vec::with_capacity(raw.len());
        for (name, p) in raw {
            check_name(name)?;
            params.push((name.clone(), p.to_distribution(name)?));
        }
        SearchSpace::new(params)
    }

    /// Parses and validates the `[space]` table of a TOML config (the table whose keys are
    /// parameter names).
    pub fn from_toml(table: &toml::Table) -> Result<SearchSpace, SpaceError> {
        let mut raw = RawSpace::new();
        for (name, value) in table {
            let p: RawParam = value.clone().try_into().map_err(|e: toml::de::Error| {
                SpaceError(format!("space.{name}: {}", e.message().trim_end()))
            })?;
            raw.insert(name.clone(), p);
        }
        SearchSpace::from_raw(&raw)
    }

    /// The canonical JSON form (stored with a study to detect a changed space).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a search space always serialises")
    }

    /// Reads the canonical JSON form back, validating it.
    pub fn from_json(text: &str) -> Result<SearchSpace, SpaceError> {
        serde_json::from_str(text).map_err(|e| SpaceError(format!("space JSON: {e}")))
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// Whether the space has no parameters (never true for a validated space).
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Parameter names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.params.iter().map(|(n, _)| n.as_str())
    }

    /// (name, distribution) pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Distribution)> + '_ {
        self.params.iter().map(|(n, d)| (n.as_str(), d))
    }

    /// The distribution of `name`.
    pub fn get(&self, name: &str) -> Option<&Distribution> {
        self.params
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|i| &self.params[i].1)
    }

    /// The position of `name` in the space's order.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.params
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
    }

    /// The user-facing value of parameter `name` (see [`Distribution::external`]); for a
    /// name outside the space, the internal value as a JSON number.
    pub fn external(&self, name: &str, internal: f64) -> Value {
        self.get(name)
            .map_or_else(|| json_number(internal), |d| d.external(internal))
    }

    /// The number the firmware receives for `name` (see [`Distribution::firmware_value`]);
    /// for a name outside the space, `internal` unchanged.
    pub fn firmware_value(&self, name: &str, internal: f64) -> f64 {
        self.get(name)
            .map_or(internal, |d| d.firmware_value(internal))
    }

    /// The range the firmware must accept for `name` (see [`Distribution::firmware_range`]).
    ///
    /// # Panics
    /// If `name` is not a parameter of the space (iterate [`SearchSpace::names`]).
    pub fn firmware_range(&self, name: &str) -> (f64, f64) {
        match self.get(name) {
            Some(d) => d.firmware_range(),
            None => panic!("firmware_range: {name} is not a parameter of the search space"),
        }
    }

    /// Whether `internal` is a valid value of parameter `name`.
    pub fn contains(&self, name: &str, internal: f64) -> bool {
        self.get(name).is_some_and(|d| d.contains(internal))
    }

    /// Snaps `x` to the nearest valid value of `name` (see [`Distribution::snap`]).
    pub fn snap(&self, name: &str, x: f64) -> Option<f64> {
        self.get(name).map(|d| d.snap(x))
    }

    /// Checks that `params` has exactly the space's parameters, each with a valid value.
    pub fn check_params(&self, params: &Params) -> Result<(), SpaceError> {
        for (name, dist) in self.iter() {
            match params.get(name) {
                None => return Err(SpaceError(format!("parameter {name} has no value"))),
                Some(&x) if !dist.contains(x) => {
                    return Err(SpaceError(format!(
                        "parameter {name}: {x} is not a value of {}",
                        dist.describe()
                    )))
                }
                Some(_) => {}
            }
        }
        if let Some(extra) = params.keys().find(|k| self.get(k).is_none()) {
            return Err(SpaceError(format!(
                "parameter {extra} is not in the search space"
            )));
        }
        Ok(())
    }

    /// All parameters as user-facing values (JSON object, in space order for known names).
    pub fn external_params(&self, params: &Params) -> serde_json::Map<String, Value> {
        params
            .iter()
            .map(|(k, &v)| (k.clone(), self.external(k, v)))
            .collect()
    }

    /// Converts user-facing values (e.g. a baseline from a config) into internal ones; every
    /// parameter of the space must be given, with a valid value.
    pub fn params_from_external(
        &self,
        values: &serde_json::Map<String, Value>,
    ) -> Result<Params, SpaceError> {
        let mut out = Params::new();
        for (name, v) in values {
            let dist = self.get(name).ok_or_else(|| {
                SpaceError(format!("parameter {name} is not in the search space"))
            })?;
            let x = dist.internal(v).ok_or_else(|| {
                SpaceError(format!(
                    "parameter {name}: {v} is not a value of {}",
                    dist.describe()
                ))
            })?;
            out.insert(name.clone(), x);
        }
        self.check_params(&out)?;
        Ok(out)
    }

    /// Lines describing how `other` differs from `self` (added, removed or changed
    /// parameters); empty when equal.
    pub fn diff(&self, other: &SearchSpace) -> Vec<String> {
        let mut out = Vec::new();
        for (name, d) in self.iter() {
            match other.get(name) {
                None => out.push(format!("{name} ({}) is gone", d.describe())),
                Some(o) if o != d => out.push(format!(
                    "{name} was {} and is now {}",
                    d.describe(),
                    o.describe()
                )),
                Some(_) => {}
            }
        }
        for (name, d) in other.iter() {
            if self.get(name).is_none() {
                out.push(format!("{name} ({}) is new", d.describe()));
            }
        }
        out
    }
}

fn check_name(name: &str) -> Result<(), SpaceError> {
    if name.is_empty() {
        return Err(SpaceError("space: a parameter name is empty".into()));
    }
    if name.len() > firmware_protocol::MAX_NAME_LEN {
        return Err(SpaceError(format!(
            "space.{name}: the name is {} bytes; the firmware protocol allows at most {}",
            name.len(),
            firmware_protocol::MAX_NAME_LEN
        )));
    }
    Ok(())
}

impl Serialize for SearchSpace {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.params.len()))?;
        for (n, d) in &self.params {
            m.serialize_entry(n, d)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for SearchSpace {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, Distribution>::deserialize(d)?;
        SearchSpace::new(map).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn space(text: &str) -> Result<SearchSpace, SpaceError> {
        let table: toml::Table = toml::from_str(text).unwrap();
        SearchSpace::from_toml(&table)
    }

    fn err(text: &str) -> String {
        space(text).unwrap_err().to_string()
    }

    #[test]
    fn parses_all_kinds_in_name_order() {
        let s = space(
            r#"
            [z_int]
            type = "int"
            low = 1
            high = 9
            step = 2
            [freq_hz]
            type = "float"
            low = 0.5
            high = 4.0
            step = 0.1
            [gain]
            type = "float"
            low = 1e-3
            high = 1.0
            log = true
            [gait]
            type = "categorical"
            choices = [0, 1, 2]
            "#,
        )
        .unwrap();
        assert_eq!(
            s.names().collect::<Vec<_>>(),
            ["freq_hz", "gain", "gait", "z_int"]
        );
        assert_eq!(
            s.get("z_int"),
            Some(&Distribution::Int {
                low: 1,
                high: 9,
                step: 2,
                log: false
            })
        );
        assert_eq!(
            s.get("gain"),
            Some(&Distribution::Float {
                low: 1e-3,
                high: 1.0,
                log: true,
                step: None
            })
        );
        assert_eq!(s.get("gait").unwrap().cardinality(), Some(3));
        assert_eq!(s.get("freq_hz").unwrap().cardinality(), Some(36));
        assert_eq!(s.index_of("gait"), Some(2));
    }

    #[test]
    fn validation_errors_name_the_parameter() {
        let cases = [
            (
                "[freq_hz]\ntype = \"float\"\nlow = 4\nhigh = 0.5",
                "space.freq_hz: low (4) must be <= high (0.5)",
            ),
            (
                "[x]\ntype = \"float\"\nlow = 0.0\nhigh = 1.0\nlog = true",
                "space.x: log scale needs low > 0",
            ),
            (
                "[g]\ntype = \"categorical\"\nchoices = []",
                "space.g: categorical needs at least one choice",
            ),
            (
                "[s]\ntype = \"float\"\nlow = 0.0\nhigh = 1.0\nstep = 0.0",
                "space.s: step must be > 0",
            ),
            (
                "[n]\ntype = \"int\"\nlow = 0\nhigh = 10\nstep = -1",
                "space.n: step must be > 0",
            ),
            (
                "[n]\ntype = \"int\"\nlow = 1\nhigh = 9\nstep = 2\nlog = true",
                "space.n: an int with log = true needs step = 1",
            ),
            (
                "[n]\ntype = \"int\"\nlow = 0\nhigh = 10\nlog = true",
                "space.n: log scale needs low > 0",
            ),
            (
                "[f]\ntype = \"float\"\nlow = 0.1\nhigh = 1.0\nlog = true\nstep = 0.1",
                "space.f: step cannot be combined with log",
            ),
            (
                "[n]\ntype = \"int\"\nlow = 0.5\nhigh = 10",
                "space.n: low (0.5) must be an integer",
            ),
            (
                "[n]\ntype = \"int\"\nlow = 0\nhigh = 10\nstep = 3",
                "space.n: high - low (10) is not a multiple of step (3); set high = 9",
            ),
            (
                "[f]\ntype = \"float\"\nlow = 0\nhigh = 1\nstep = 0.3",
                "space.f: high - low (1) is not a multiple of step (0.3)",
            ),
            (
                "[f]\ntype = \"float\"\nhigh = 1",
                "space.f: `low` is missing",
            ),
            (
                "[f]\ntype = \"float\"\nlow = 0\nhigh = 1\nchoices = [1]",
                "space.f: `choices` does not apply",
            ),
            (
                "[g]\ntype = \"categorical\"\nchoices = [1]\nlow = 0",
                "space.g: `low` does not apply",
            ),
            (
                "[g]\ntype = \"categorical\"\nchoices = [1, \"a\"]",
                "space.g: categorical choices must be all numbers or all strings",
            ),
            (
                "[g]\ntype = \"categorical\"\nchoices = [\"a\", \"a\"]",
                "space.g: choice \"a\" is listed twice",
            ),
            ("[g]\ntype = \"categorical\"", "space.g: categorical needs"),
            (
                "[q]\ntype = \"float\"\nlow = 0\nhigh = 1\nlo = 3",
                "space.q: unknown field `lo`",
            ),
            (
                "[q]\ntype = \"double\"\nlow = 0\nhigh = 1",
                "space.q: unknown variant `double`",
            ),
            (
                "[a_very_long_parameter_name_x]\ntype = \"float\"\nlow = 0\nhigh = 1",
                "space.a_very_long_parameter_name_x: the name is 28 bytes",
            ),
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(got.starts_with(want), "{text:?}\n got: {got}\nwant: {want}");
        }
        assert!(err("").contains("no parameters"));
    }

    #[test]
    fn degenerate_range_and_exact_steps_are_accepted() {
        let s = space(
            "[a]\ntype = \"float\"\nlow = 1\nhigh = 1\n[b]\ntype = \"float\"\nlow = 0.5\nhigh = 4.0\nstep = 0.1\n[c]\ntype = \"int\"\nlow = -3\nhigh = -3",
        )
        .unwrap();
        assert_eq!(s.len(), 3);
        assert!(s.contains("a", 1.0));
        assert!(s.contains("b", 0.5 + 7.0 * 0.1));
        assert!(s.contains("c", -3.0));
    }

    #[test]
    fn external_and_firmware_values() {
        let s = space(
            r#"
            [f]
            type = "float"
            low = 0.0
            high = 2.0
            [i]
            type = "int"
            low = -5
            high = 5
            [num]
            type = "categorical"
            choices = [0.25, 7, -1]
            [txt]
            type = "categorical"
            choices = ["walk", "trot", "bound"]
            "#,
        )
        .unwrap();
        assert_eq!(s.external("f", 1.5), json!(1.5));
        assert_eq!(s.external("i", -2.0), json!(-2));
        assert!(s.external("i", -2.0).is_i64());
        assert_eq!(s.external("num", 1.0), json!(7.0));
        assert_eq!(s.external("txt", 2.0), json!("bound"));
        assert_eq!(s.external("nope", 0.5), json!(0.5));

        assert_eq!(s.firmware_value("f", 1.5), 1.5);
        assert_eq!(s.firmware_value("i", -2.0), -2.0);
        assert_eq!(s.firmware_value("num", 0.0), 0.25);
        assert_eq!(s.firmware_value("num", 2.0), -1.0);
        assert_eq!(s.firmware_value("txt", 1.0), 1.0);

        assert_eq!(s.firmware_range("f"), (0.0, 2.0));
        assert_eq!(s.firmware_range("i"), (-5.0, 5.0));
        assert_eq!(s.firmware_range("num"), (-1.0, 7.0));
        assert_eq!(s.firmware_range("txt"), (0.0, 2.0));
        assert_eq!(s.firmware_value("nope", 0.5), 0.5);

        // Round trip external -> internal.
        for (name, internal) in [("f", 0.75), ("i", 3.0), ("num", 2.0), ("txt", 1.0)] {
            let ext = s.external(name, internal);
            assert_eq!(
                s.get(name).unwrap().internal(&ext),
                Some(internal),
                "{name}"
            );
        }
        assert_eq!(s.get("txt").unwrap().internal(&json!("gallop")), None);
        assert_eq!(s.get("i").unwrap().internal(&json!(2.5)), None);
        assert_eq!(s.get("f").unwrap().internal(&json!(3.0)), None);

        let mut ext = serde_json::Map::new();
        ext.insert("f".into(), json!(1));
        ext.insert("i".into(), json!(4));
        ext.insert("num".into(), json!(0.25));
        ext.insert("txt".into(), json!("trot"));
        let p = s.params_from_external(&ext).unwrap();
        assert_eq!(p["f"], 1.0);
        assert_eq!(p["num"], 0.0);
        assert_eq!(p["txt"], 1.0);
        assert_eq!(
            s.external_params(&p),
            ext.clone()
                .into_iter()
                .map(|(k, v)| {
                    // Numeric categorical and float values come back as floats.
                    let v = if k == "f" { json!(1.0) } else { v };
                    (k, v)
                })
                .collect()
        );
        ext.remove("i");
        assert!(s
            .params_from_external(&ext)
            .unwrap_err()
            .to_string()
            .contains("parameter i has no value"));
    }

    #[test]
    fn contains_and_snap() {
        let f = Distribution::Float {
            low: 0.5,
            high: 4.0,
            log: false,
            step: Some(0.1),
        };
        assert!(f.contains(0.5) && f.contains(4.0) && f.contains(0.5 + 0.1 * 3.0));
        assert!(!f.contains(0.55) && !f.contains(4.1) && !f.contains(f64::NAN));
        assert!((f.snap(0.56) - 0.6).abs() < 1e-12);
        assert_eq!(f.snap(10.0), 4.0);
        assert_eq!(f.snap(-1.0), 0.5);
        assert!(f.contains(f.snap(2.349)));

        let i = Distribution::Int {
            low: 1,
            high: 9,
            step: 2,
            log: false,
        };
        assert!(i.contains(3.0) && !i.contains(4.0) && !i.contains(3.5) && !i.contains(11.0));
        assert_eq!(i.snap(4.2), 5.0);
        assert_eq!(i.snap(100.0), 9.0);
        assert_eq!(i.snap(f64::NAN), 1.0);

        let c = Distribution::Categorical {
            choices: vec![Choice::Text("a".into()), Choice::Text("b".into())],
        };
        assert!(c.contains(1.0) && !c.contains(2.0) && !c.contains(0.5) && !c.contains(-1.0));
        assert_eq!(c.snap(7.0), 1.0);
        assert_eq!(c.snap(-3.0), 0.0);
    }

    #[test]
    fn check_params_names_problems() {
        let s = space("[a]\ntype = \"int\"\nlow = 0\nhigh = 3").unwrap();
        let mut p = Params::new();
        assert!(s.check_params(&p).unwrap_err().0.contains("a has no value"));
        p.insert("a".into(), 4.0);
        assert!(s
            .check_params(&p)
            .unwrap_err()
            .0
            .contains("4 is not a value of int [0, 3]"));
        p.insert("a".into(), 2.0);
        s.check_params(&p).unwrap();
        p.insert("b".into(), 0.0);
        assert!(s
            .check_params(&p)
            .unwrap_err()
            .0
            .contains("b is not in the search space"));
    }

    #[test]
    fn json_round_trip_and_diff() {
        let s = space(
            "[a]\ntype = \"int\"\nlow = 0\nhigh = 3\n[b]\ntype = \"categorical\"\nchoices = [\"x\", \"y\"]\n[c]\ntype = \"float\"\nlow = 0.1\nhigh = 2\nlog = true",
        )
        .unwrap();
        let back = SearchSpace::from_json(&s.to_json()).unwrap();
        assert_eq!(back, s);
        assert!(s.diff(&back).is_empty());

        let t = space(
            "[a]\ntype = \"int\"\nlow = 0\nhigh = 4\n[b]\ntype = \"categorical\"\nchoices = [\"x\", \"y\"]\n[d]\ntype = \"float\"\nlow = 0\nhigh = 1",
        )
        .unwrap();
        let d = s.diff(&t);
        assert_eq!(
            d,
            [
                "a was int [0, 3] and is now int [0, 4]",
                "c (float [0.1, 2] log) is gone",
                "d (float [0, 1]) is new"
            ]
        );
        // Invalid stored JSON is refused with the reason.
        let bad = r#"{"a":{"type":"int","low":5,"high":1,"step":1,"log":false}}"#;
        assert!(SearchSpace::from_json(bad)
            .unwrap_err()
            .0
            .contains("space.a: low (5) must be <= high (1)"));
    }
}
