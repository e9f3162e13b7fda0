//! pipeline: machine-learning experiments from declarative YAML, content-addressed and cached.
//!
//! Data flows one way: `spec` (YAML → typed pipeline) → `plan` (ops, sweeps, keys, DAG) →
//! `schedule` (cache check, run, commit; events) → `ui` (renders events) and `results`
//! (publishes outputs). `ops` are the stage kinds; `cache` stores entries by key. Ops build on
//! `datasets` (loaders, generators), `ml` (burn models and training), `plot` and `artifacts`
//! (the typed files stages pass to each other).

pub mod artifacts;
pub mod cache;
pub mod cli;
pub mod datasets;
pub mod ml;
pub mod ops;
pub mod plan;
pub mod plot;
pub mod results;
pub mod schedule;
pub mod spec;
pub mod suggest;
pub mod ui;
