//! cnflow's own counters (drops, evictions, parse errors...). Every loss is
//! counted here and exported as a metric by telemetry, logged periodically by
//! the agent, and shown by `replay --stats`.
//!
//! Counters are registered by name + attributes and live for the whole
//! process, so modules can declare them independently:
//! ```
//! use std::sync::LazyLock;
//! use cnflow::stats::{counter, Counter};
//! static EVICTED: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.flow.evicted", &[("reason", "cap")]));
//! EVICTED.add(1);
//! ```
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

#[derive(Clone, Copy)]
pub struct Counter(&'static AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    #[inline]
    pub fn inc(&self) {
        self.add(1)
    }
    /// Overwrite (for values mirrored from elsewhere, e.g. kernel per-CPU maps).
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Gauge-like values use the same storage; the kind tells exporters how to report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

struct Entry {
    name: &'static str,
    attrs: Vec<(&'static str, String)>,
    kind: Kind,
    value: &'static AtomicU64,
}

static REGISTRY: LazyLock<Mutex<Vec<Entry>>> = LazyLock::new(|| Mutex::new(Vec::new()));

fn register(name: &'static str, attrs: &[(&'static str, &str)], kind: Kind) -> Counter {
    let mut reg = REGISTRY.lock();
    if let Some(e) = reg.iter().find(|e| {
        e.name == name
            && e.attrs.len() == attrs.len()
            && e.attrs.iter().zip(attrs).all(|(a, b)| a.0 == b.0 && a.1 == b.1)
    }) {
        return Counter(e.value);
    }
    // Each counter on its own cache lines: counters registered one after the
    // other (the ring reader's, the decoders', the exporter's) would share a
    // line, and an increment on one thread would take it from the others on
    // every packet (false sharing). 128 bytes: the adjacent-line prefetcher
    // pulls lines in pairs.
    #[repr(align(128))]
    struct Padded(AtomicU64);
    let value: &'static AtomicU64 = &Box::leak(Box::new(Padded(AtomicU64::new(0)))).0;
    reg.push(Entry { name, attrs: attrs.iter().map(|(k, v)| (*k, v.to_string())).collect(), kind, value });
    Counter(value)
}

/// A monotonically increasing counter. Same name + attributes → same counter.
pub fn counter(name: &'static str, attrs: &[(&'static str, &str)]) -> Counter {
    register(name, attrs, Kind::Counter)
}

/// A value that goes up and down (queue depth, flow table size).
pub fn gauge(name: &'static str, attrs: &[(&'static str, &str)]) -> Counter {
    register(name, attrs, Kind::Gauge)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub name: &'static str,
    pub attrs: Vec<(&'static str, String)>,
    pub kind: Kind,
    pub value: u64,
}

impl Sample {
    /// `name{k=v,...}`, or just `name` without attributes.
    pub fn key(&self) -> String {
        if self.attrs.is_empty() {
            return self.name.to_string();
        }
        let attrs: Vec<String> = self.attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{}{{{}}}", self.name, attrs.join(","))
    }
}

/// One log line: `name{attrs}=value` for every non-zero counter.
pub fn summary(samples: &[Sample]) -> String {
    samples.iter().filter(|s| s.value > 0).map(|s| format!("{}={}", s.key(), s.value)).collect::<Vec<_>>().join(" ")
}

/// Current value of every registered counter, in registration order.
pub fn snapshot() -> Vec<Sample> {
    REGISTRY
        .lock()
        .iter()
        .map(|e| Sample { name: e.name, attrs: e.attrs.clone(), kind: e.kind, value: e.value.load(Ordering::Relaxed) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn same_name_and_attrs_share_storage() {
        let a = counter("test.x", &[("k", "v")]);
        let b = counter("test.x", &[("k", "v")]);
        let c = counter("test.x", &[("k", "w")]);
        a.add(2);
        b.inc();
        assert_eq!(a.get(), 3);
        assert_eq!(c.get(), 0);
        assert!(snapshot().iter().any(|s| s.name == "test.x" && s.value == 3));
    }
}
