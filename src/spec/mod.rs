//! The experiment spec: TOML types, validation with `file:line:col` errors,
//! `--set` overrides, and expansion into resolved trial plans.
//!
//! Owns everything between the text of `experiments/*.toml` and a list of
//! [`TrialPlan`]s. It never touches the database or tensors: a spec that fails
//! here has had no side effects anywhere.

mod expand;
mod locate;
mod search;
mod types;
mod validate;

pub use expand::{TrialPlan, expand};
pub use types::*;

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem found in a spec, already rendered with its location.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecProblem {
    /// `file:line:col` or `--set key=value`.
    pub location: String,
    pub message: String,
}

/// Every problem found in a spec; the spec is rejected as a whole.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecError {
    pub problems: Vec<SpecProblem>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}", p.location, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecError {}

impl SpecError {
    fn one(location: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            problems: vec![SpecProblem {
                location: location.into(),
                message: message.into(),
            }],
        }
    }
}

/// A spec that parsed and validated, with the text it came from.
#[derive(Debug, Clone)]
pub struct LoadedSpec {
    pub spec: Spec,
    pub path: PathBuf,
    /// The file's text as written (overrides are recorded separately).
    pub text: String,
    pub overrides: Vec<String>,
}

impl LoadedSpec {
    /// The spec after overrides, as canonical TOML: what the sweep actually ran.
    pub fn resolved_toml(&self) -> String {
        toml::to_string(&self.spec).expect("a validated spec serialises")
    }
}

/// Reads, parses and validates a spec file, applying `--set key=value` overrides.
pub fn load(path: &Path, overrides: &[String]) -> Result<LoadedSpec, SpecError> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| SpecError::one(&display, format!("cannot read spec: {e}")))?;
    let spec = parse(&text, &display, overrides)?;
    Ok(LoadedSpec {
        spec,
        path: path.to_path_buf(),
        text,
        overrides: overrides.to_vec(),
    })
}

/// Parses and validates spec text; `origin` names the file in messages.
pub fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<Spec, SpecError> {
    let mut spec: Spec = toml::from_str(text).map_err(|e| {
        let location = match e.span() {
            Some(span) => format!("{origin}:{}", locate::line_col(text, span.start)),
            None => origin.to_string(),
        };
        SpecError::one(location, e.message().trim().to_string())
    })?;
    let mut overridden: Vec<(Vec<String>, String)> = Vec::new();
    if !overrides.is_empty() {
        let mut table: toml::Table = toml::from_str(text).expect("parsed above");
        for raw in overrides {
            let (key, value) = parse_override(raw)?;
            apply_override(&mut table, &key, value)
                .map_err(|m| SpecError::one(format!("--set {raw}"), m))?;
            spec = Spec::deserialize_table(table.clone()).map_err(|e| {
                SpecError::one(format!("--set {raw}"), e.message().trim().to_string())
            })?;
            overridden.push((key, raw.clone()));
        }
    }
    let problems = validate::validate(&spec);
    if problems.is_empty() {
        return Ok(spec);
    }
    let problems = problems
        .into_iter()
        .map(|(path, message)| {
            let by_override = overridden
                .iter()
                .rev()
                .find(|(key, _)| path.starts_with(key) || key.starts_with(&path));
            let location = match by_override {
                Some((_, raw)) => format!("--set {raw}"),
                None => match locate::find(text, &path) {
                    Some(offset) => format!("{origin}:{}", locate::line_col(text, offset)),
                    None => origin.to_string(),
                },
            };
            SpecProblem { location, message }
        })
        .collect();
    Err(SpecError { problems })
}

/// Splits `a.b.c=value`; the value is read as TOML (`2`, `1e-4`, `["x"]`,
/// `true`) and falls back to a plain string (`/data/CK+48`).
fn parse_override(raw: &str) -> Result<(Vec<String>, toml::Value), SpecError> {
    let Some((key, value)) = raw.split_once('=') else {
        return Err(SpecError::one(
            format!("--set {raw}"),
            "expected KEY=VALUE, e.g. --set train.epochs=2",
        ));
    };
    let key: Vec<String> = key
        .trim()
        .split('.')
        .map(|s| s.trim().to_string())
        .collect();
    if key.iter().any(|k| k.is_empty()) {
        return Err(SpecError::one(
            format!("--set {raw}"),
            "the key has an empty part; expected a dotted path like train.lr",
        ));
    }
    let value = value.trim();
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    Ok((key, parsed))
}

fn apply_override(
    table: &mut toml::Table,
    key: &[String],
    value: toml::Value,
) -> Result<(), String> {
    let mut root = toml::Value::Table(std::mem::take(table));
    let result = set_path(&mut root, key, value, 0);
    if let toml::Value::Table(t) = root {
        *table = t;
    }
    result
}

/// Sets `key[depth..]` under `node`, creating tables on the way; a numeric
/// part indexes a list (`backbone.0.name`).
fn set_path(
    node: &mut toml::Value,
    key: &[String],
    value: toml::Value,
    depth: usize,
) -> Result<(), String> {
    let part = &key[depth];
    let here = || key[..depth].join(".");
    let last = depth + 1 == key.len();
    let child = match node {
        toml::Value::Table(t) => {
            if last {
                t.insert(part.clone(), value);
                return Ok(());
            }
            t.entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        }
        toml::Value::Array(items) => {
            let len = items.len();
            let index: usize = part.parse().map_err(|_| {
                format!(
                    "`{}` is a list; index it by position, e.g. {}.0",
                    here(),
                    here()
                )
            })?;
            let slot = items.get_mut(index).ok_or_else(|| {
                format!("`{}` has {len} entries; there is no index {index}", here())
            })?;
            if last {
                *slot = value;
                return Ok(());
            }
            slot
        }
        other => {
            return Err(format!(
                "`{}` is a {}, not a table",
                here(),
                other.type_str()
            ));
        }
    };
    set_path(child, key, value, depth + 1)
}
