//! Span sampling decided on the finished exchange (issue #19): the
//! OpenTelemetry SDK samplers (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`)
//! plus keep rules that only an agent seeing the whole exchange can apply
//! (errors, slow exchanges) and per-protocol ratios.
//!
//! Decisions are consistent without coordination: probabilistic ones use the
//! specification's consistent probability sampling ([`threshold`]), with the
//! randomness of the adopted trace id (or its `rv`), else of a hash of the
//! exchange's wire identity ([`wire_randomness`]). One decision covers both
//! spans of an exchange seen on one node (a loopback or same-node pod pair),
//! and kept spans record their probability as `th` in the `ot` tracestate
//! member so backends can extrapolate counts. RED metrics are recorded before
//! the decision, so they stay exact.
//!
//! The same [`Policy`] runs in the gateway ([`Policy::decide_span`]) for
//! agents that export unsampled.
pub mod config;
pub mod threshold;

pub use config::{SamplingConfig, TracesSamplerEnv};
pub use threshold::Threshold;

use crate::exchange::{Exchange, Protocol};
use crate::flow::Transport;
use crate::stats::{counter, Counter};
use std::sync::LazyLock;
use threshold::{join_tracestate, split_tracestate, trace_id_randomness, OtState};

/// The root sampler's choice for a trace without a parent decision to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// Keep everything; the tracestate is left as it came (like the SDK's AlwaysOn).
    AlwaysOn,
    AlwaysOff,
    /// Keep with the threshold's probability; `th` is written on kept spans.
    Ratio(Threshold),
}

impl Root {
    /// A ratio in [0, 1]: 0 never samples (not a probability the
    /// specification can express), 1 keeps all but still writes `th:0`.
    pub fn ratio(p: f64) -> Option<Self> {
        if p == 0.0 {
            return Some(Root::AlwaysOff);
        }
        Threshold::from_probability(p, threshold::DEFAULT_PRECISION).map(Root::Ratio)
    }
}

/// Why a span was kept or sampled out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The sampler kept it.
    Sampled,
    /// Kept by CNFLOW_SAMPLING_KEEP_ERRORS although the sampler dropped it.
    KeptError,
    /// Kept by CNFLOW_SAMPLING_KEEP_SLOWER_THAN_MS although the sampler dropped it.
    KeptSlow,
    /// Parent-based sampler, the adopted parent was not sampled.
    ParentNotSampled,
    /// The ratio sampler's threshold rejected it.
    Ratio,
    AlwaysOff,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Sampled => "sampled",
            Reason::KeptError => "error",
            Reason::KeptSlow => "slow",
            Reason::ParentNotSampled => "parent_not_sampled",
            Reason::Ratio => "ratio",
            Reason::AlwaysOff => "always_off",
        }
    }
}

/// Agent-side counters: spans sampled out are not drops (nothing was lost
/// that the configuration wanted), so they have their own names.
static SAMPLED_OUT: LazyLock<[Counter; 3]> = LazyLock::new(|| {
    [Reason::ParentNotSampled, Reason::Ratio, Reason::AlwaysOff]
        .map(|r| counter("cnflow.sampling.sampled_out", &[("reason", r.as_str())]))
});
static KEPT_BY_RULE: LazyLock<[Counter; 2]> = LazyLock::new(|| {
    [Reason::KeptError, Reason::KeptSlow].map(|r| counter("cnflow.sampling.kept_by_rule", &[("reason", r.as_str())]))
});

/// Count `spans` spans decided with `reason` (agent side).
pub fn count(reason: Reason, spans: u64) {
    match reason {
        Reason::Sampled => {}
        Reason::KeptError => KEPT_BY_RULE[0].add(spans),
        Reason::KeptSlow => KEPT_BY_RULE[1].add(spans),
        Reason::ParentNotSampled => SAMPLED_OUT[0].add(spans),
        Reason::Ratio => SAMPLED_OUT[1].add(spans),
        Reason::AlwaysOff => SAMPLED_OUT[2].add(spans),
    }
}

/// The outcome for one exchange (all its spans) or one span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub keep: bool,
    pub reason: Reason,
    /// The tracestate the kept span carries, when it differs from the input.
    pub trace_state: Option<String>,
}

impl Decision {
    /// Kept as sampled, tracestate unchanged.
    pub fn sampled() -> Self {
        Decision { keep: true, reason: Reason::Sampled, trace_state: None }
    }
}

/// What a decision looks at. `parent_sampled` is the adopted parent's sampled
/// flag (None: no trace context was adopted).
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub protocol: Option<Protocol>,
    pub parent_sampled: Option<bool>,
    pub trace_id: &'a [u8; 16],
    pub trace_state: &'a str,
    /// Randomness to use when no trace context was adopted (the trace id is
    /// then ours, random per node, so it cannot give consistent decisions).
    pub wire_randomness: Option<u64>,
    pub error: bool,
    pub duration_ns: u64,
    /// A downstream stage (the gateway) re-sampling finished spans: it may
    /// raise a span's threshold but never lower it (specification:
    /// "equalizing downstream sampler").
    pub downstream: bool,
}

/// A configured sampling policy (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub parent_based: bool,
    pub root: Root,
    /// Root choice per protocol (CNFLOW_SAMPLING_RATIO_<NAME>), replacing `root`.
    pub per_protocol: Vec<(Protocol, Root)>,
    pub keep_errors: bool,
    pub keep_slower_than_ns: Option<u64>,
}

impl Default for Policy {
    /// The SDK default, `parentbased_always_on`, with errors kept: every span
    /// is exported unless an adopted parent was not sampled.
    fn default() -> Self {
        Self {
            parent_based: true,
            root: Root::AlwaysOn,
            per_protocol: Vec::new(),
            keep_errors: true,
            keep_slower_than_ns: None,
        }
    }
}

impl Policy {
    /// Keep every span, tracestate untouched (tests, benchmarks).
    pub fn always_on() -> Self {
        Self { parent_based: false, ..Self::default() }
    }

    /// From the process environment's variables; errors name the variable.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Self> {
        config::policy_from_vars(vars)
    }

    /// Whether any decision can drop a span (else the sink skips the work).
    pub fn can_drop(&self) -> bool {
        self.parent_based || self.root != Root::AlwaysOn || !self.per_protocol.is_empty()
    }

    /// Short description for the start-up log, e.g. `parentbased_traceidratio{0.1}`.
    pub fn describe(&self) -> String {
        let root = |r: &Root| match r {
            Root::AlwaysOn => "always_on".to_string(),
            Root::AlwaysOff => "always_off".to_string(),
            Root::Ratio(t) => format!("traceidratio{{{}}}", t.probability()),
        };
        let mut s = if self.parent_based { format!("parentbased_{}", root(&self.root)) } else { root(&self.root) };
        for (p, r) in &self.per_protocol {
            s.push_str(&format!(" {}={}", p.name(), root(r)));
        }
        if self.keep_errors {
            s.push_str(" keep_errors");
        }
        if let Some(ns) = self.keep_slower_than_ns {
            s.push_str(&format!(" keep_slower_than={}ms", ns / 1_000_000));
        }
        s
    }

    /// An exchange of `protocol` that adopted no trace context is kept, with
    /// nothing written to its tracestate, whatever else it is: what
    /// [`Policy::decide`] returns then (no parent, empty tracestate, an
    /// always_on root: the keep rules have nothing to turn, and no threshold
    /// is written), known without drawing its randomness or splitting a
    /// tracestate (the default policy, parentbased_always_on, asks this for
    /// every exchange).
    pub fn keeps_every_root(&self, protocol: Option<Protocol>) -> bool {
        matches!(self.root_for(protocol), Root::AlwaysOn)
    }

    fn root_for(&self, protocol: Option<Protocol>) -> &Root {
        protocol.and_then(|p| self.per_protocol.iter().find(|(q, _)| *q == p)).map(|(_, r)| r).unwrap_or(&self.root)
    }

    /// Decide for one exchange (every span it gives) or one span.
    pub fn decide(&self, i: &Input) -> Decision {
        let (mut ot, others) = split_tracestate(i.trace_state);
        let upstream_th = ot.th.clone();
        let adopted = i.parent_sampled.is_some();
        // Randomness: explicit rv, else the adopted trace id, else the wire identity.
        let randomness = |ot: &OtState| -> (u64, bool) {
            match (ot.rv, adopted, i.wire_randomness) {
                (Some(rv), _, _) => (rv, false),
                (None, false, Some(w)) => (w, true),
                _ => (trace_id_randomness(i.trace_id), false),
            }
        };
        let mut changed = false;
        let (mut keep, mut reason) = match (self.parent_based, i.parent_sampled) {
            (true, Some(sampled)) => {
                // Follow the parent; keep its th only when it is consistent
                // with the randomness (the specification's simple check).
                if let Some(th) = &ot.th {
                    if !(sampled && th.keeps(randomness(&ot).0)) {
                        ot.th = None;
                        changed = true;
                    }
                }
                (sampled, if sampled { Reason::Sampled } else { Reason::ParentNotSampled })
            }
            _ => match self.root_for(i.protocol) {
                Root::AlwaysOn => (true, Reason::Sampled),
                Root::AlwaysOff => (false, Reason::AlwaysOff),
                Root::Ratio(t) => {
                    let (r, explicit) = randomness(&ot);
                    let keep = t.keeps(r);
                    if explicit {
                        // The root may set rv (the specification allows it
                        // there only): downstream samplers, the gateway
                        // among them, then decide on the same randomness.
                        ot.rv = Some(r);
                        changed = true;
                    }
                    let lower = i.downstream && ot.th.as_ref().is_some_and(|x| x.value >= t.value);
                    if keep && !lower {
                        ot.th = Some(t.clone());
                        changed = true;
                    }
                    (keep, if keep { Reason::Sampled } else { Reason::Ratio })
                }
            },
        };
        let rule = if self.keep_errors && i.error {
            Some(Reason::KeptError)
        } else if self.keep_slower_than_ns.is_some_and(|t| i.duration_ns >= t) {
            Some(Reason::KeptSlow)
        } else {
            None
        };
        if let Some(rule) = rule {
            // Kept whatever the randomness: its inclusion probability is 1,
            // so a probabilistic threshold (written or inherited) becomes th:0
            // and backends count it once.
            if !keep {
                reason = rule;
                keep = true;
            }
            // Downstream, the upstream threshold stands whatever the ratio
            // said: this stage kept the span with probability 1, and
            // lowering a threshold would claim more than upstream kept.
            let probabilistic = ot.th.is_some() || !matches!(self.root_for(i.protocol), Root::AlwaysOn);
            if i.downstream {
                if ot.th != upstream_th {
                    ot.th = upstream_th;
                    changed = true;
                }
            } else if probabilistic && ot.th.as_ref().is_none_or(|t| t.value != 0) {
                ot.th = Some(Threshold::always());
                changed = true;
            }
        }
        let trace_state = (keep && changed).then(|| join_tracestate(&ot, &others));
        Decision { keep, reason, trace_state }
    }
}

/// Gateway-side counters (sampled out is not dropped: see `cnflow.export.dropped`).
static GATEWAY_SAMPLED_OUT: LazyLock<[Counter; 3]> = LazyLock::new(|| {
    [Reason::ParentNotSampled, Reason::Ratio, Reason::AlwaysOff]
        .map(|r| counter("cnflow.gateway.sampled_out", &[("signal", "traces"), ("reason", r.as_str())]))
});

/// The policy applied by the gateway to received spans, as a downstream
/// stage: randomness from `rv` or the trace id, errors from the span
/// status, durations from its timestamps; per-protocol ratios do not apply
/// (a span does not name cnflow's protocol). Every span gets the root
/// sampler's decision, parent or not: a downstream stage sees finished
/// spans, and deciding all of them on the trace's randomness keeps traces
/// (and an agent's CLIENT/SERVER pairs, whose SERVER span has a local
/// parent) whole, where following parent flags would split them. Returns
/// the number of spans removed.
pub fn apply_to_request(
    policy: &Policy,
    req: &mut opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
) -> u64 {
    apply_to_request_keeping(policy, req, |_| false)
}

/// [`apply_to_request`], except that a sampled-out span for which
/// `graph_needs` is true stays, marked graph-only
/// ([`crate::telemetry::network::graph::GRAPH_ONLY_ATTR`]): the gateway's
/// stitcher still counts it in the service graph, then drops it. Returns the
/// number of spans removed or marked.
pub fn apply_to_request_keeping(
    policy: &Policy,
    req: &mut opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
    graph_needs: impl Fn(&opentelemetry_proto::tonic::trace::v1::Span) -> bool,
) -> u64 {
    let mut removed = 0;
    for rs in &mut req.resource_spans {
        for ss in &mut rs.scope_spans {
            ss.spans.retain_mut(|span| {
                let Ok(trace_id) = <[u8; 16]>::try_from(span.trace_id.as_slice()) else { return true };
                let d = policy.decide(&Input {
                    protocol: None,
                    parent_sampled: None,
                    trace_id: &trace_id,
                    trace_state: &span.trace_state,
                    wire_randomness: None,
                    error: span.status.as_ref().is_some_and(|s| s.code == 2),
                    duration_ns: span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano),
                    downstream: true,
                });
                match d.reason {
                    Reason::ParentNotSampled => GATEWAY_SAMPLED_OUT[0].inc(),
                    Reason::Ratio => GATEWAY_SAMPLED_OUT[1].inc(),
                    Reason::AlwaysOff => GATEWAY_SAMPLED_OUT[2].inc(),
                    _ => {}
                }
                if !d.keep {
                    removed += 1;
                    if graph_needs(span) {
                        span.attributes.push(opentelemetry_proto::tonic::common::v1::KeyValue {
                            key: crate::telemetry::network::graph::GRAPH_ONLY_ATTR.into(),
                            value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                                value: Some(opentelemetry_proto::tonic::common::v1::any_value::Value::BoolValue(true)),
                            }),
                            ..Default::default()
                        });
                        return true;
                    }
                    return false;
                }
                if let Some(ts) = d.trace_state {
                    span.trace_state = ts;
                }
                true
            });
        }
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
    }
    req.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
    removed
}

/// 56 bits of randomness from an exchange's wire identity, the same on every
/// node that captured the exchange: its [`WireKey`](crate::exchange::WireKey)
/// (TCP sequence numbers, UDP transaction id and client port), which the
/// gateway's stitcher and the agents' gateway routing use too. So the
/// client's node and the server's node keep or drop their halves alike.
/// Exchanges without wire facts (ICMP, a request whose segment fell out of
/// the bounded chunk log) hash the addresses and start time instead: both
/// spans of a pair seen on one node still get one decision.
pub fn wire_randomness(ex: &Exchange) -> u64 {
    if let Some(k) = crate::exchange::WireKey::of(ex) {
        return k.randomness();
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(&[match ex.conn.transport {
        Transport::Tcp => 6,
        Transport::Udp => 17,
        Transport::Icmp => 1,
    }]);
    for a in [ex.conn.client, ex.conn.server] {
        let ip = match a.ip() {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            std::net::IpAddr::V6(v6) => v6,
        };
        eat(&ip.octets());
        eat(&a.port().to_be_bytes());
    }
    eat(&ex.start_ns.to_be_bytes());
    let mut z = h;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) >> 8
}

#[cfg(test)]
mod tests;
