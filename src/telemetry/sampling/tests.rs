use super::*;

fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

fn policy(v: &[(&str, &str)]) -> Policy {
    Policy::from_vars(vars(v)).unwrap()
}

const ID: [u8; 16] = [0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36];

fn input(parent: Option<bool>, ts: &str, wire: Option<u64>) -> Input<'_> {
    Input {
        protocol: Some(Protocol::Http1),
        parent_sampled: parent,
        trace_id: &ID,
        trace_state: ts,
        wire_randomness: wire,
        error: false,
        duration_ns: 1_000_000,
        downstream: false,
    }
}

#[test]
fn sampler_variables_and_errors_name_the_variable() {
    assert_eq!(policy(&[]), Policy::default());
    let p = policy(&[("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "0.1")]);
    assert!(p.parent_based);
    assert_eq!(p.root, Root::Ratio(Threshold::parse("e666").unwrap()));
    assert_eq!(policy(&[("OTEL_TRACES_SAMPLER", "ALWAYS_OFF")]).root, Root::AlwaysOff);
    assert_eq!(policy(&[("OTEL_TRACES_SAMPLER", "traceidratio")]).root, Root::Ratio(Threshold::always()));
    assert_eq!(
        policy(&[("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "0")]).root,
        Root::AlwaysOff
    );
    let p = policy(&[
        ("CNFLOW_SAMPLING_RATIO_DNS", "0.01"),
        ("CNFLOW_SAMPLING_KEEP_ERRORS", "false"),
        ("CNFLOW_SAMPLING_KEEP_SLOWER_THAN_MS", "250"),
    ]);
    assert_eq!(p.per_protocol, vec![(Protocol::Dns, Root::Ratio(Threshold::parse("fd70a").unwrap()))]);
    assert!(!p.keep_errors);
    assert_eq!(p.keep_slower_than_ns, Some(250_000_000));
    for (bad, var) in [
        (vec![("OTEL_TRACES_SAMPLER", "sometimes")], "OTEL_TRACES_SAMPLER"),
        (vec![("OTEL_TRACES_SAMPLER", "xray")], "OTEL_TRACES_SAMPLER"),
        (vec![("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "half")], "OTEL_TRACES_SAMPLER_ARG"),
        (vec![("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "1.5")], "OTEL_TRACES_SAMPLER_ARG"),
        (vec![("CNFLOW_SAMPLING_RATIO_GOPHER", "0.5")], "CNFLOW_SAMPLING_RATIO_GOPHER"),
        (vec![("CNFLOW_SAMPLING_RATIO_DNS", "-1")], "CNFLOW_SAMPLING_RATIO_DNS"),
        (vec![("CNFLOW_SAMPLING_KEEP_ERRORS", "maybe")], "CNFLOW_SAMPLING"),
    ] {
        let e = format!("{:#}", Policy::from_vars(vars(&bad)).unwrap_err());
        assert!(e.contains(var), "{bad:?}: {e}");
    }
}

#[test]
fn always_on_and_default_leave_the_tracestate_alone() {
    for p in [Policy::default(), Policy::always_on(), policy(&[("OTEL_TRACES_SAMPLER", "always_on")])] {
        let d = p.decide(&input(None, "congo=x", Some(0)));
        assert_eq!(d, Decision { keep: true, reason: Reason::Sampled, trace_state: None });
        let mut i = input(None, "", Some(0));
        i.error = true;
        assert_eq!(p.decide(&i).trace_state, None, "errors under always_on need no th");
    }
    assert!(!Policy::always_on().can_drop());
    assert!(Policy::default().can_drop());
}

#[test]
fn parent_based_follows_the_sampled_flag() {
    let p = Policy::default();
    assert!(p.decide(&input(Some(true), "", None)).keep);
    let d = p.decide(&input(Some(false), "", None));
    assert_eq!((d.keep, d.reason), (false, Reason::ParentNotSampled));
    // parentbased_always_off only matters for roots.
    let off = policy(&[("OTEL_TRACES_SAMPLER", "parentbased_always_off")]);
    assert!(off.decide(&input(Some(true), "", None)).keep);
    assert_eq!(off.decide(&input(None, "", Some(0))).reason, Reason::AlwaysOff);
    // A consistent parent th passes through unchanged; an inconsistent one is erased.
    // ID's randomness is 0xce929d0e0e4736: th:c (0xc0...) is consistent, th:d is not.
    let d = p.decide(&input(Some(true), "ot=th:c,congo=x", None));
    assert_eq!(d.trace_state, None);
    let d = p.decide(&input(Some(true), "ot=th:d,congo=x", None));
    assert_eq!(d.trace_state.as_deref(), Some("congo=x"));
    // Without parent-based, traceidratio ignores the parent's flag.
    let ratio = policy(&[("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "0.25")]);
    let d = ratio.decide(&input(Some(false), "", None));
    assert!(d.keep);
    assert_eq!(d.trace_state.as_deref(), Some("ot=th:c"));
}

#[test]
fn ratio_uses_rv_then_trace_id_then_wire_identity() {
    let p = policy(&[("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "0.25")]);
    // No parent, no rv: the wire randomness decides and is recorded as rv.
    let d = p.decide(&input(None, "", Some(0xf0000000000000)));
    assert_eq!(d.trace_state.as_deref(), Some("ot=th:c;rv:f0000000000000"));
    let d = p.decide(&input(None, "", Some(0x10000000000000)));
    assert_eq!((d.keep, d.reason), (false, Reason::Ratio));
    // An explicit rv wins over the wire identity and is not rewritten.
    let d = p.decide(&input(None, "ot=rv:ff000000000000", Some(0)));
    assert_eq!(d.trace_state.as_deref(), Some("ot=th:c;rv:ff000000000000"));
    // With a trace id adopted (traceidratio), its last 56 bits decide.
    let r = policy(&[("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "0.25")]);
    assert!(r.decide(&input(Some(true), "", Some(0))).keep);
    let r = policy(&[("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "0.1")]);
    assert_eq!(r.decide(&input(Some(true), "", Some(u64::MAX >> 8))).reason, Reason::Ratio);
    // The per-protocol ratio replaces the root ratio for its protocol only.
    let p = policy(&[("OTEL_TRACES_SAMPLER", "always_on"), ("CNFLOW_SAMPLING_RATIO_HTTP1", "0.5")]);
    assert_eq!(p.decide(&input(None, "", Some(0))).reason, Reason::Ratio);
    let mut i = input(None, "", Some(0));
    i.protocol = Some(Protocol::Dns);
    assert_eq!(p.decide(&i), Decision { keep: true, reason: Reason::Sampled, trace_state: None });
}

#[test]
fn keep_rules_override_and_write_th_zero() {
    let p = policy(&[
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
        ("CNFLOW_SAMPLING_KEEP_SLOWER_THAN_MS", "100"),
    ]);
    let mut i = input(None, "congo=x", Some(0));
    assert!(!p.decide(&i).keep);
    i.error = true;
    let d = p.decide(&i);
    assert_eq!((d.keep, d.reason), (true, Reason::KeptError));
    assert_eq!(d.trace_state.as_deref(), Some("ot=th:0;rv:00000000000000,congo=x"));
    i.error = false;
    i.duration_ns = 100_000_000;
    assert_eq!(p.decide(&i).reason, Reason::KeptSlow);
    // An error the sampler kept anyway still says th:0: errors are kept with probability 1.
    let mut i = input(None, "", Some(u64::MAX >> 8));
    i.error = true;
    let d = p.decide(&i);
    assert_eq!((d.reason, d.trace_state.as_deref()), (Reason::Sampled, Some("ot=th:0;rv:ffffffffffffff")));
    // A parent that did not sample: the error span is still kept.
    let mut i = input(Some(false), "", None);
    i.error = true;
    assert_eq!(p.decide(&i).reason, Reason::KeptError);
    // Rules off: dropped.
    let p = policy(&[("OTEL_TRACES_SAMPLER", "always_off"), ("CNFLOW_SAMPLING_KEEP_ERRORS", "false")]);
    assert_eq!(p.decide(&i).reason, Reason::AlwaysOff);
}

#[test]
fn ratio_keeps_about_the_configured_share() {
    let p = policy(&[("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "0.1")]);
    let mut ids = crate::telemetry::IdGen::Seeded(42);
    let n = 20_000;
    let kept = (0..n)
        .filter(|_| {
            let id = ids.trace_id();
            let mut i = input(Some(true), "", None);
            i.trace_id = &id;
            p.decide(&i).keep
        })
        .count();
    // Binomial(20000, 0.1): sd ≈ 42; ±5 sd.
    assert!((1790..=2210).contains(&kept), "{kept}");
}

#[test]
fn wire_randomness_is_56_bits_and_stable() {
    use crate::flow::{ConnInfo, RoleEvidence};
    let conn = std::sync::Arc::new(ConnInfo {
        id: 1,
        ifindex: 1,
        transport: Transport::Tcp,
        client: "10.200.0.1:40000".parse().unwrap(),
        server: "10.200.0.2:80".parse().unwrap(),
        client_to_server: crate::capture::Direction::Egress,
        evidence: RoleEvidence::Syn,
        first_ts_ns: 0,
    });
    let ex = |start_ns| Exchange {
        conn: conn.clone(),
        wire: Default::default(),
        protocol: Protocol::Icmp,
        start_ns,
        end_ns: start_ns + 1,
        request_bytes: 0,
        response_bytes: 0,
        outcome: crate::exchange::Outcome::Complete,
        partial: false,
        detail: crate::exchange::Detail::Icmp(Default::default()),
    };
    let (a, b) = (wire_randomness(&ex(1)), wire_randomness(&ex(2)));
    assert!(a < threshold::MAX_THRESHOLD && b < threshold::MAX_THRESHOLD);
    assert_ne!(a, b);
    // Fixed forever: a change would break consistency between agent versions.
    assert_eq!(a, wire_randomness(&ex(1)));
    assert_eq!(format!("{a:014x}"), format!("{:014x}", wire_randomness(&ex(1))));
    // Uniform enough even for start times that differ in a few low bits:
    // 20000 exchanges 37 µs apart, ratio 0.1 → Binomial(20000, 0.1), ±5 sd.
    let t = Threshold::from_probability(0.1, 4).unwrap();
    let kept = (0..20_000u64).filter(|i| t.keeps(wire_randomness(&ex(1_700_000_000_000_000_000 + i * 37_000)))).count();
    assert!((1790..=2210).contains(&kept), "{kept}");
}

#[test]
fn wire_randomness_is_the_same_on_both_nodes_of_a_nated_exchange() {
    use crate::flow::{ConnInfo, RoleEvidence};
    let conn = |client: &str, server: &str| {
        std::sync::Arc::new(ConnInfo {
            id: 1,
            ifindex: 1,
            transport: Transport::Tcp,
            client: client.parse().unwrap(),
            server: server.parse().unwrap(),
            client_to_server: crate::capture::Direction::Egress,
            evidence: RoleEvidence::Syn,
            first_ts_ns: 0,
        })
    };
    let wire = crate::exchange::Wire { request_seq: Some(77), response_seq: Some(9), ..Default::default() };
    let ex = |conn, start_ns| Exchange {
        conn,
        wire,
        protocol: Protocol::Http1,
        start_ns,
        end_ns: start_ns + 1,
        request_bytes: 0,
        response_bytes: 0,
        outcome: crate::exchange::Outcome::Complete,
        partial: false,
        detail: crate::exchange::Detail::Icmp(Default::default()),
    };
    // The client's node sees the Service address, the server's node the
    // masqueraded client, with clocks 3 ms apart: one decision.
    let at_client = ex(conn("10.200.1.2:40000", "10.200.9.9:80"), 1_000);
    let at_server = ex(conn("10.200.0.1:40000", "10.200.2.2:8080"), 3_001_000);
    assert_eq!(wire_randomness(&at_client), wire_randomness(&at_server));
    assert_eq!(wire_randomness(&at_client), crate::exchange::WireKey::tcp(77, Some(9)).randomness());
}

/// The sink with a policy: loopback pairs (both sides local), 2000 OK, 50
/// errors (HTTP 500), 50 slow; metrics exact, every error and slow pair
/// kept, OK ones near 10%, pairs never split.
#[test]
fn sink_samples_pairs_together_and_keeps_metrics_exact() {
    use crate::capture::Direction::Egress;
    use crate::telemetry::samples::*;
    use crate::telemetry::{Collected, IdGen, LocalAddrs, Output, SinkOptions, TelemetryConfig, TelemetrySink};
    use opentelemetry_proto::tonic::metrics::v1::metric;
    let out = std::sync::Arc::new(parking_lot::Mutex::new(Collected::default()));
    let host = std::sync::Arc::new(crate::workload::Identity::default());
    let mut o = SinkOptions::new(TelemetryConfig::default(), host);
    o.outputs.push(Output::Collect(out.clone()));
    o.ids = IdGen::Seeded(3);
    o.own_metrics = false;
    o.local_addrs = LocalAddrs::new(["10.200.0.1".parse().unwrap(), "10.200.0.2".parse().unwrap()]);
    o.sampling = policy(&[
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
        ("CNFLOW_SAMPLING_KEEP_SLOWER_THAN_MS", "500"),
    ]);
    let mut s = TelemetrySink::new(o);
    let mut t = T0;
    for i in 0..2100u64 {
        t += 10_000_000;
        let mut ex = http_exchange(Egress, "GET", "/ok", if i % 42 == 0 { 500 } else { 200 }, t);
        if i % 42 == 21 {
            ex.end_ns = ex.start_ns + 600_000_000;
        }
        s.record(&ex);
    }
    s.finish(t + 1_000_000_000);
    let c = out.lock();
    let spans: Vec<_> = c.spans().collect();
    // Pairs: CLIENT and SERVER of one exchange share the trace id.
    let mut by_trace: std::collections::BTreeMap<&[u8], Vec<_>> = Default::default();
    for sp in &spans {
        by_trace.entry(&sp.trace_id[..]).or_default().push(*sp);
    }
    assert!(by_trace.values().all(|v| v.len() == 2), "a pair was split");
    let err = by_trace.values().filter(|v| v.iter().all(|s| s.status.as_ref().unwrap().code == 2)).count();
    let slow = by_trace.values().filter(|v| v[0].end_time_unix_nano - v[0].start_time_unix_nano >= 500_000_000).count();
    assert_eq!((err, slow), (50, 50));
    let ok = by_trace.len() - 100;
    // Binomial(2000, 0.1): mean 200, sd ≈ 13.4; ±5 sd.
    assert!((133..=267).contains(&ok), "{ok}");
    for v in by_trace.values() {
        let ts = &v[0].trace_state;
        let rule = v[0].status.as_ref().unwrap().code == 2
            || v[0].end_time_unix_nano - v[0].start_time_unix_nano >= 500_000_000;
        assert!(ts.starts_with(if rule { "ot=th:0;rv:" } else { "ot=th:e666;rv:" }), "{ts}");
    }
    // Histograms count every exchange, sampled or not.
    let count: u64 = c
        .metrics
        .iter()
        .flat_map(|m| &m.resource_metrics)
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .filter(|m| m.name == "http.server.request.duration")
        .flat_map(|m| match &m.data {
            Some(metric::Data::Histogram(h)) => h.data_points.iter().map(|d| d.count).collect::<Vec<_>>(),
            _ => vec![],
        })
        .sum();
    assert_eq!(count, 2100);
}

/// The gateway as a downstream stage: spans an agent kept at 0.1 (th:e666
/// with their rv) stay kept at 0.1 (same randomness, so the same decision),
/// unsampled ones are thinned to about 10%, errors and slow ones kept, and
/// an upstream threshold is never lowered.
#[test]
fn gateway_applies_the_same_policy_downstream() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
    let p = policy(&[
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
        ("CNFLOW_SAMPLING_KEEP_SLOWER_THAN_MS", "100"),
    ]);
    let mut ids = crate::telemetry::IdGen::Seeded(9);
    let span = |trace_id: [u8; 16], ts: &str, error: bool, dur_ms: u64| Span {
        trace_id: trace_id.to_vec(),
        span_id: vec![1; 8],
        trace_state: ts.into(),
        flags: 0x101,
        start_time_unix_nano: 1_000,
        end_time_unix_nano: 1_000 + dur_ms * 1_000_000,
        status: Some(Status { code: if error { status::StatusCode::Error as i32 } else { 0 }, message: String::new() }),
        ..Default::default()
    };
    let mut spans = Vec::new();
    // 5000 unsampled OK spans (agent always_on), 100 errors, 100 slow.
    for _ in 0..5000 {
        spans.push(span(ids.trace_id(), "", false, 1));
    }
    for i in 0..200 {
        spans.push(span(ids.trace_id(), "", i < 100, if i < 100 { 1 } else { 150 }));
    }
    // What an agent at 0.1 kept, with its explicit randomness.
    let mut agent_kept = 0;
    for _ in 0..2000 {
        let r = wire_randomness_for_test(&mut ids);
        let d = p.decide(&input(None, "", Some(r)));
        if d.keep {
            agent_kept += 1;
            spans.push(span(ids.trace_id(), d.trace_state.as_deref().unwrap(), false, 1));
        }
    }
    // A span an upstream stage sampled at 1/16 (th:f) with randomness above it.
    spans.push(span(ids.trace_id(), "ot=th:f;rv:ff000000000000", false, 1));
    // 300 CLIENT/SERVER pairs as an agent exports them unsampled: the SERVER
    // span has the CLIENT as (local) parent, the CLIENT may have a remote one.
    let mut pair_ids = Vec::new();
    for i in 0..300 {
        let t = ids.trace_id();
        pair_ids.push(t.to_vec());
        let mut client = span(t, "", false, 1);
        client.flags = if i % 2 == 0 { 0x301 } else { 0x101 };
        let mut server = span(t, "", false, 1);
        server.parent_span_id = vec![1; 8];
        spans.extend([client, server]);
    }
    let total = spans.len() as u64;
    let mut req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    };
    let removed = apply_to_request(&p, &mut req);
    let kept: Vec<&Span> = req.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).collect();
    assert_eq!(kept.len() as u64 + removed, total);
    let errors = kept.iter().filter(|s| s.status.as_ref().unwrap().code == 2).count();
    let slow = kept.iter().filter(|s| s.end_time_unix_nano - s.start_time_unix_nano >= 100_000_000).count();
    assert_eq!((errors, slow), (100, 100));
    // Errors/slow keep their (absent) upstream threshold: downstream never lowers it.
    assert!(kept.iter().filter(|s| s.status.as_ref().unwrap().code == 2).all(|s| s.trace_state.is_empty()));
    let from_agent = kept.iter().filter(|s| s.trace_state.contains("rv:")).count();
    assert_eq!(from_agent, agent_kept + 1, "every span the agent kept at the same ratio stays kept");
    assert!(kept.iter().any(|s| s.trace_state == "ot=th:f;rv:ff000000000000"), "th:f is not lowered to e666");
    // Pairs stay whole: both spans of a trace or neither.
    let pairs_kept: Vec<usize> =
        pair_ids.iter().map(|t| kept.iter().filter(|s| &s.trace_id == t).count()).filter(|n| *n > 0).collect();
    assert!(pairs_kept.iter().all(|n| *n == 2), "{pairs_kept:?}");
    let thinned = kept.len() - 200 - from_agent - 2 * pairs_kept.len();
    // Binomial(5000, 0.1): mean 500, sd ≈ 21; ±5 sd.
    assert!((394..=606).contains(&thinned), "{thinned}");
    assert!((5..=60).contains(&pairs_kept.len()), "{}", pairs_kept.len());
    assert!(kept.iter().filter(|s| s.trace_state.is_empty()).count() >= 200);
}

fn wire_randomness_for_test(ids: &mut crate::telemetry::IdGen) -> u64 {
    threshold::trace_id_randomness(&ids.trace_id())
}

#[test]
fn gateway_config_reads_the_policy_only_when_asked() {
    use crate::gateway::GatewayConfig;
    let on = GatewayConfig::from_vars(vars(&[
        ("CNFLOW_GATEWAY_SAMPLING", "true"),
        ("OTEL_TRACES_SAMPLER", "traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
    ]))
    .unwrap();
    assert_eq!(on.sampling_policy.unwrap().root, Root::Ratio(Threshold::parse("8").unwrap()));
    let off = GatewayConfig::from_vars(vars(&[("OTEL_TRACES_SAMPLER", "bogus")])).unwrap();
    assert!(off.sampling_policy.is_none());
    let e = GatewayConfig::from_vars(vars(&[("CNFLOW_GATEWAY_SAMPLING", "true"), ("OTEL_TRACES_SAMPLER", "bogus")]));
    assert!(format!("{:#}", e.unwrap_err()).contains("OTEL_TRACES_SAMPLER"));
}

/// The gateway's policy with its service graph on: a sampled-out span the
/// graph needs stays, marked graph-only (the stitcher counts, then drops
/// it); others leave as before.
#[test]
fn sampled_out_spans_the_graph_needs_stay_marked() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let p = policy(&[("OTEL_TRACES_SAMPLER", "always_off"), ("CNFLOW_SAMPLING_KEEP_ERRORS", "false")]);
    let span = |name: &str| Span { trace_id: vec![7; 16], name: name.into(), ..Default::default() };
    let mut req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans: vec![span("keyed"), span("plain")], ..Default::default() }],
            ..Default::default()
        }],
    };
    assert_eq!(apply_to_request_keeping(&p, &mut req, |s| s.name == "keyed"), 2);
    let left: Vec<&Span> = req.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).collect();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].name, "keyed");
    assert!(left[0].attributes.iter().any(|kv| kv.key == crate::telemetry::network::graph::GRAPH_ONLY_ATTR));
}

/// `keeps_every_root` is a shortcut for `decide`: wherever it says so, an
/// exchange without trace context (no parent, empty tracestate) is kept as
/// sampled with its tracestate unchanged, whatever its error status,
/// duration, randomness or the keep rules.
#[test]
fn keeps_every_root_is_what_decide_says_without_a_parent() {
    let policies = [
        policy(&[]),
        policy(&[("OTEL_TRACES_SAMPLER", "always_on")]),
        policy(&[("CNFLOW_SAMPLING_KEEP_SLOWER_THAN_MS", "1")]),
        policy(&[("CNFLOW_SAMPLING_KEEP_ERRORS", "false")]),
        policy(&[("CNFLOW_SAMPLING_RATIO_DNS", "0.01")]),
        policy(&[("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "0.5")]),
        policy(&[("OTEL_TRACES_SAMPLER", "always_off")]),
        policy(&[("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "1")]),
    ];
    let mut shortcuts = 0;
    for p in &policies {
        for proto in [Protocol::Http1, Protocol::Dns, Protocol::Redis] {
            if !p.keeps_every_root(Some(proto)) {
                continue;
            }
            shortcuts += 1;
            for (error, duration_ns, wire) in
                [(false, 10, Some(1)), (true, 5_000_000, Some(u64::MAX >> 8)), (true, 0, None)]
            {
                let i = Input { protocol: Some(proto), error, duration_ns, ..input(None, "", wire) };
                assert_eq!(p.decide(&i), Decision::sampled(), "{p:?} {proto:?} error={error}");
            }
        }
    }
    // Checked where it applies; not claimed for ratio or always_off roots.
    assert_eq!(shortcuts, 14);
}
