//! Random search over `[sweep.space]` (`strategy = "random"`).
//!
//! Each space entry is a list (a uniform choice among its values) or a
//! one-key distribution table:
//!
//! | entry | draws |
//! | --- | --- |
//! | `[a, b, c]` or `{ choice = [a, b, c] }` | one of the values, each equally likely |
//! | `{ uniform = [lo, hi] }` | a float, uniform in `lo..=hi` (`lo < hi`) |
//! | `{ loguniform = [lo, hi] }` | a float whose logarithm is uniform in `ln lo..=ln hi` (`0 < lo < hi`) |
//! | `{ int = [lo, hi] }` | an integer, uniform in `lo..=hi` (`lo < hi`, both TOML integers) |
//!
//! `sweep.samples` points are drawn from one ChaCha8 stream seeded by
//! `sweep.seed`, or else `experiment.seed`: point after point, and within a
//! point one draw per key in sorted key order. So the same spec always gives
//! the same points, and raising `samples` keeps the earlier points (and
//! therefore their finished trials) as a prefix.
//!
//! A point drawn twice (likely with small choice spaces) is kept once, so a
//! sweep may have fewer than `samples` points; trial keys stay unique.
//!
//! Validation (in `validate.rs`) checks every bound and choice as a value of
//! the train field it sweeps; the fields' valid ranges are intervals, so every
//! value drawn between valid bounds is valid too.

use crate::spec::SweepConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The distribution names a space table may use.
pub const NAMES: [&str; 4] = ["choice", "uniform", "loguniform", "int"];

/// One `[sweep.space]` entry under `strategy = "random"`.
#[derive(Debug, Clone, PartialEq)]
pub enum Dist {
    Choice(Vec<toml::Value>),
    Uniform { lo: f64, hi: f64 },
    LogUniform { lo: f64, hi: f64 },
    Int { lo: i64, hi: i64 },
}

/// A problem with one space entry: the key path below `sweep.space.<key>`
/// and the message.
pub type EntryProblem = (Vec<String>, String);

impl Dist {
    /// Reads the entry `sweep.space.<key>`. Problems are about its shape
    /// only; whether the values fit the train field is checked by the caller.
    pub fn parse(key: &str, value: &toml::Value) -> Result<Dist, Vec<EntryProblem>> {
        let one = |sub: &[&str], msg: String| {
            Err(vec![(sub.iter().map(|s| s.to_string()).collect(), msg)])
        };
        let table = match value {
            toml::Value::Array(items) => return Ok(Dist::Choice(items.clone())),
            toml::Value::Table(t) => t,
            other => {
                return one(
                    &[],
                    format!(
                        "sweep.space.{key} must be a list of values or a distribution such as {{ loguniform = [1e-4, 1e-2] }}, got a {}",
                        other.type_str()
                    ),
                );
            }
        };
        let mut entries = table.iter();
        let (Some((name, args)), None) = (entries.next(), entries.next()) else {
            return one(
                &[],
                format!(
                    "sweep.space.{key} must be one distribution such as {{ loguniform = [1e-4, 1e-2] }}, got a table with {} keys",
                    table.len()
                ),
            );
        };
        let name = name.as_str();
        let here = format!("sweep.space.{key}.{name}");
        match name {
            "choice" => match args.as_array() {
                Some(items) => Ok(Dist::Choice(items.clone())),
                None => one(
                    &[name],
                    format!("{here} must be a list of values, got a {}", args.type_str()),
                ),
            },
            "uniform" | "loguniform" => {
                let bounds = args.as_array().and_then(|a| match a.as_slice() {
                    [lo, hi] => Some((as_f64(lo)?, as_f64(hi)?)),
                    _ => None,
                });
                let Some((lo, hi)) = bounds.filter(|(lo, hi)| lo.is_finite() && hi.is_finite())
                else {
                    return one(
                        &[name],
                        format!("{here} must be [lo, hi] with two finite numbers, got {args}"),
                    );
                };
                let mut problems = Vec::new();
                if name == "loguniform" && lo <= 0.0 {
                    problems.push((
                        vec![name.to_string(), "0".to_string()],
                        format!("{here} needs lo > 0 (it draws on a log scale), got lo = {lo}"),
                    ));
                }
                if lo >= hi {
                    problems.push((
                        vec![name.to_string()],
                        format!("{here} needs lo < hi, got [{lo}, {hi}]"),
                    ));
                }
                if !problems.is_empty() {
                    return Err(problems);
                }
                Ok(if name == "uniform" {
                    Dist::Uniform { lo, hi }
                } else {
                    Dist::LogUniform { lo, hi }
                })
            }
            "int" => {
                let bounds = args.as_array().and_then(|a| match a.as_slice() {
                    [lo, hi] => Some((lo.as_integer()?, hi.as_integer()?)),
                    _ => None,
                });
                let Some((lo, hi)) = bounds else {
                    return one(
                        &[name],
                        format!("{here} must be [lo, hi] with two integers, got {args}"),
                    );
                };
                if lo >= hi {
                    return one(&[name], format!("{here} needs lo < hi, got [{lo}, {hi}]"));
                }
                Ok(Dist::Int { lo, hi })
            }
            other => one(
                &[other],
                format!(
                    "sweep.space.{key}: unknown distribution `{other}`, expected one of {}",
                    NAMES.map(|n| format!("`{n}`")).join(", ")
                ),
            ),
        }
    }

    /// The distribution's name as the spec writes it (`choice` for a list).
    pub fn name(&self) -> &'static str {
        match self {
            Dist::Choice(_) => "choice",
            Dist::Uniform { .. } => "uniform",
            Dist::LogUniform { .. } => "loguniform",
            Dist::Int { .. } => "int",
        }
    }

    /// The bounds of a range as the values it draws (floats, or integers for
    /// `int`); `None` for a choice.
    pub fn bounds(&self) -> Option<[toml::Value; 2]> {
        use toml::Value::{Float, Integer};
        match *self {
            Dist::Choice(_) => None,
            Dist::Uniform { lo, hi } | Dist::LogUniform { lo, hi } => Some([Float(lo), Float(hi)]),
            Dist::Int { lo, hi } => Some([Integer(lo), Integer(hi)]),
        }
    }

    fn draw(&self, rng: &mut ChaCha8Rng) -> toml::Value {
        match self {
            Dist::Choice(items) => items[rng.random_range(0..items.len())].clone(),
            Dist::Uniform { lo, hi } => toml::Value::Float(rng.random_range(*lo..=*hi)),
            Dist::LogUniform { lo, hi } => {
                let x = rng.random_range(lo.ln()..=hi.ln()).exp();
                // exp(ln x) may round a hair outside the bounds.
                toml::Value::Float(x.clamp(*lo, *hi))
            }
            Dist::Int { lo, hi } => toml::Value::Integer(rng.random_range(*lo..=*hi)),
        }
    }
}

fn as_f64(v: &toml::Value) -> Option<f64> {
    match v {
        toml::Value::Float(f) => Some(*f),
        toml::Value::Integer(i) => Some(*i as f64),
        _ => None,
    }
}

/// The distinct points of a validated random sweep, in draw order; each point
/// lists `(train field, value)` in sorted key order. `default_seed` is
/// `experiment.seed`, used when `sweep.seed` is not set.
pub fn draw_points(sweep: &SweepConfig, default_seed: u64) -> Vec<Vec<(String, toml::Value)>> {
    let dists: Vec<(&String, Dist)> = sweep
        .space
        .iter()
        .map(|(key, value)| {
            let dist = Dist::parse(key, value).expect("validated: sweep.space distributions");
            (key, dist)
        })
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(sweep.seed.unwrap_or(default_seed));
    let mut points: Vec<Vec<(String, toml::Value)>> = Vec::new();
    for _ in 0..sweep.samples {
        let point: Vec<(String, toml::Value)> = dists
            .iter()
            .map(|(key, dist)| ((*key).clone(), dist.draw(&mut rng)))
            .collect();
        if !points.contains(&point) {
            points.push(point);
        }
    }
    points
}
