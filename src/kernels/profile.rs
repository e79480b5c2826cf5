//! Time spent inside each kernel, for `fer-lab bench --profile`.
//!
//! Off by default (one relaxed atomic load per kernel call); when on, each
//! kernel call adds its wall time and a count under its name. Calls nested
//! inside another timed call (a kernel run by rayon while its caller waits)
//! are counted in both, so shares are per kernel, not a partition.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static ON: AtomicBool = AtomicBool::new(false);
static TABLE: Mutex<BTreeMap<&'static str, (Duration, u64)>> = Mutex::new(BTreeMap::new());

/// Starts (or stops) recording, clearing what was recorded.
pub fn enable(on: bool) {
    TABLE.lock().unwrap_or_else(|e| e.into_inner()).clear();
    ON.store(on, Ordering::Relaxed);
}

/// Takes what was recorded: (name, total time, calls), by name.
pub fn take() -> Vec<(&'static str, Duration, u64)> {
    let mut t = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    std::mem::take(&mut *t)
        .into_iter()
        .map(|(k, (d, c))| (k, d, c))
        .collect()
}

/// Runs `f`, adding its time to `name` when recording is on.
pub fn timed<R>(name: &'static str, f: impl FnOnce() -> R) -> R {
    if !ON.load(Ordering::Relaxed) {
        return f();
    }
    let t = Instant::now();
    let out = f();
    let d = t.elapsed();
    let mut table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let e = table.entry(name).or_default();
    e.0 += d;
    e.1 += 1;
    out
}

/// Like [`timed`], for a name made at run time (leaked once per name, only
/// while recording).
pub fn timed_named<R>(name: impl FnOnce() -> String, f: impl FnOnce() -> R) -> R {
    if !ON.load(Ordering::Relaxed) {
        return f();
    }
    static NAMES: Mutex<BTreeMap<String, &'static str>> = Mutex::new(BTreeMap::new());
    let name = name();
    let key = *NAMES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(name.clone())
        .or_insert_with(|| Box::leak(name.into_boxed_str()));
    timed(key, f)
}

/// [`timed`] under `name`, and [`timed_named`] under `name/dims`: the
/// kernel's total and its share per tensor shape.
pub fn timed_with_dims<R>(name: &'static str, dims: &[usize], f: impl FnOnce() -> R) -> R {
    timed(name, || timed_named(|| format!("{name}/{dims:?}"), f))
}
