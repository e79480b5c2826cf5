//! fer-lab: facial-expression-recognition experiments with candle.
//!
//! `spec` (TOML -> trial plans) -> `sched` (runs trials) -> `train` (the loop,
//! over `models` and `data`, scored by `metrics`) -> `store` (SQLite) ->
//! `report` (leaderboards). `cli` turns arguments into these calls.

pub mod bench;
pub mod cli;
pub mod data;
pub mod hub;
pub mod kernels;
pub mod metrics;
pub mod models;
pub mod predict;
pub mod prune;
pub mod report;
pub mod sched;
pub mod spec;
pub mod store;
pub mod train;
