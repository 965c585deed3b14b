//! cnflow: eBPF network observability with OpenTelemetry output.
//!
//! Data flows one way: capture → flow → protocol → exchange → telemetry → export.
//! Every arrow is a plain Rust type so each stage can be fed from a test.
pub mod agent;
pub mod capture;
pub mod cmd;
pub mod env_vars;
pub mod exchange;
pub mod export;
pub mod flow;
pub mod gateway;
pub mod k8s;
pub mod protocol;
pub mod self_telemetry;
pub mod stats;
pub mod telemetry;
pub mod workload;
/// Old name of [`workload`], kept only while `telemetry/metrics.rs` (being
/// reorganised with the protocol folders) still imports `crate::enrich`.
#[doc(hidden)]
pub use workload as enrich;
