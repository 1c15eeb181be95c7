//! What the outside hears of the pipeline: Prometheus metrics, the `syncctl log` ring, the
//! `on_batch` / `on_failure` hooks, and the [`Reporter`] through which the dispatcher tells all
//! three at once.

pub mod hooks;
pub mod log;
pub mod metrics;
mod reporter;

pub use reporter::Reporter;
