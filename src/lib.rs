//! cnflow: eBPF network observability with OpenTelemetry output.
//!
//! Data flows one way: capture → flow → protocol → exchange → telemetry → export.
//! Every arrow is a plain Rust type so each stage can be fed from a test.
pub mod agent;
pub mod capture;
pub mod cmd;
pub mod env_vars;
pub mod export;
pub mod flow;
pub mod gateway;
pub mod k8s;
pub mod otel;
pub mod process;
pub mod protocol;
pub mod self_telemetry;
pub mod stats;
pub mod telemetry;
pub mod workload;

/// Exchanges are the protocol layer's output; `crate::exchange` stays their short path.
pub use protocol::exchange;
