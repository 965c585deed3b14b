//! RED metrics: explicit-bucket duration histograms per resource and
//! low-cardinality attribute set, plus cnflow's own counters from the stats
//! registry. Cumulative (default) or delta temporality; a per-metric
//! cardinality limit sends further attribute sets to one overflow series, so
//! memory is bounded whatever the traffic.
use super::attr::{self, Attrs, V};
use super::config::Temporality;
use super::resource;
use super::semconv::{Instrument, MessageCounter, OVERFLOW_KEY, SCHEMA_URL};
use crate::stats;
use crate::workload::Identity;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};

static OVERFLOWED: LazyLock<stats::Counter> = LazyLock::new(|| stats::counter("cnflow.telemetry.metric_overflow", &[]));

#[derive(Debug, Clone)]
struct Hist {
    counts: Vec<u64>,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Hist {
    fn new(bounds: usize) -> Self {
        Self { counts: vec![0; bounds + 1], count: 0, sum: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY }
    }
    fn record(&mut self, bounds: &[f64], v: f64) {
        // Upper bounds are inclusive in OTLP explicit buckets.
        let i = bounds.partition_point(|b| *b < v);
        self.counts[i] += 1;
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }
}

/// One instrument's histograms on one resource. Looked up once per exchange:
/// a hash map (foldhash) rather than an ordered map, whose every comparison
/// walks attribute strings; `collect` sorts the series, so the output order
/// is the same. The histograms are kept apart from the map so that the
/// recent-series cache ([`Recent`]) can name one by its index.
#[derive(Default)]
struct Series {
    index: HashMap<Key, usize, foldhash::fast::RandomState>,
    hists: Vec<Hist>,
}

/// A series recently recorded, with its attributes as the mapping pushed
/// them: consecutive exchanges of a connection, or of a busy endpoint, mostly
/// land in the same few series, and comparing the new attributes with these
/// costs a fraction of sorting, hashing and looking them up (a fifth of the
/// agent's work per exchange went there).
struct Recent {
    resource: Arc<Identity>,
    inst: Instrument,
    attrs: Attrs,
    res_idx: usize,
    slot: usize,
}

/// Series remembered by [`Metrics::record`] (the oldest is replaced).
const RECENT: usize = 8;
/// Message counts per attribute set.
type Counts = HashMap<Key, u64, foldhash::fast::RandomState>;

/// The attributes of a series (sorted by key) as a map key, hashed and
/// compared for less than the derived `Vec<(&str, V)>` forms (this runs for
/// every exchange): the hash covers the values only (which keys are present
/// follows from the instrument and the values' kinds; equal sets still hash
/// alike, and a set that differs in keys only is told apart by `eq`), and a
/// key is compared by address before its text (they are the mappings'
/// `&'static str` constants).
#[derive(Debug, Clone, PartialOrd, Ord)]
struct Key(Attrs);

impl PartialEq for Key {
    fn eq(&self, o: &Self) -> bool {
        attrs_eq(&self.0, &o.0)
    }
}

/// The same attributes in the same order.
fn attrs_eq(a: &Attrs, b: &Attrs) -> bool {
    // Values compared here rather than through `V`'s derived `eq` (which
    // stayed an out-of-line call per attribute).
    let value_eq = |a: &V, b: &V| match (a, b) {
        (V::S(x), V::S(y)) => x == y,
        (V::I(x), V::I(y)) => x == y,
        (V::B(x), V::B(y)) => x == y,
        (V::A(x), V::A(y)) => x == y,
        _ => false,
    };
    a.len() == b.len()
        && a.iter().zip(b).all(|((ka, va), (kb, vb))| (std::ptr::eq(*ka, *kb) || ka == kb) && value_eq(va, vb))
}
impl Eq for Key {}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        for (_, v) in &self.0 {
            match v {
                V::S(s) => h.write(s.as_bytes()),
                V::I(i) => h.write_u64(*i as u64),
                V::B(b) => h.write_u8(u8::from(*b)),
                V::A(a) => a.iter().for_each(|s| h.write(s.as_bytes())),
            }
        }
    }
}

/// The entries of a series map in attribute order.
fn sorted<T>(m: &HashMap<Key, T, foldhash::fast::RandomState>) -> Vec<(&Attrs, &T)> {
    let mut v: Vec<_> = m.iter().map(|(k, t)| (&k.0, t)).collect();
    v.sort_unstable_by(|a, b| a.0.cmp(b.0));
    v
}
/// A stats counter: name and attributes.
type StatKey = (&'static str, Vec<(&'static str, String)>);

pub fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "cnflow".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        attributes: vec![],
        dropped_attributes_count: 0,
    }
}

pub struct Metrics {
    temporality: Temporality,
    limit: usize,
    /// Per resource (in order of first appearance), per instrument.
    resources: Vec<(Arc<Identity>, BTreeMap<Instrument, Series>)>,
    /// Start of the current aggregation period (first observation for cumulative).
    start_ns: Option<u64>,
    last_stats: HashMap<StatKey, u64>,
    /// Messaging message counters, per resource, per counter.
    counters: Vec<(Arc<Identity>, BTreeMap<MessageCounter, Counts>)>,
    /// Series recently recorded (at most [`RECENT`]); emptied with the series.
    recent: Vec<Recent>,
    /// Where the next remembered series goes in `recent` once it is full.
    recent_next: usize,
}

impl Metrics {
    pub fn new(temporality: Temporality, cardinality_limit: usize) -> Self {
        Self {
            temporality,
            limit: cardinality_limit.max(1),
            resources: Vec::new(),
            start_ns: None,
            last_stats: HashMap::new(),
            counters: Vec::new(),
            recent: Vec::with_capacity(RECENT),
            recent_next: 0,
        }
    }

    /// Record a duration for the span's instrument on `resource`.
    pub fn record(&mut self, resource: &Arc<Identity>, inst: Instrument, mut attrs: Attrs, dur_ns: u64, ts_ns: u64) {
        self.start_ns.get_or_insert(ts_ns);
        let bounds = inst.buckets();
        let value = inst.value(dur_ns);
        let hit = self
            .recent
            .iter()
            .find(|r| r.inst == inst && Arc::ptr_eq(&r.resource, resource) && attrs_eq(&r.attrs, &attrs));
        if let Some(r) = hit {
            let series = self.resources[r.res_idx].1.get_mut(&inst).expect("a remembered series exists");
            series.hists[r.slot].record(bounds, value);
            crate::otel::attr::recycle_attrs(attrs);
            return;
        }
        let idx = match self.resources.iter().position(|(r, _)| Arc::ptr_eq(r, resource) || **r == **resource) {
            Some(i) => i,
            None => {
                self.resources.push((resource.clone(), BTreeMap::new()));
                self.resources.len() - 1
            }
        };
        let series = self.resources[idx].1.entry(inst).or_default();
        // Remembered as pushed (before the sort), for the next exchanges.
        let mut pushed = crate::otel::attr::take_attrs(attrs.len());
        pushed.extend(attrs.iter().cloned());
        // The mappings push them in key order: then this only compares.
        attrs.sort_by(|a, b| a.0.cmp(b.0));
        let mut key = Key(attrs);
        let (slot, remember) = match series.index.get(&key) {
            Some(&slot) => {
                // The series exists: the list goes back for the next exchange's mapping.
                crate::otel::attr::recycle_attrs(key.0);
                (slot, true)
            }
            None => {
                // Past the limit the exchange goes to the overflow series, and
                // is not remembered: every overflowing exchange is counted.
                let within = series.index.len() < self.limit;
                if !within {
                    OVERFLOWED.inc();
                    // Once per process: the counter says how often, the log says that it happens.
                    static WARNED: std::sync::Once = std::sync::Once::new();
                    let limit = self.limit;
                    WARNED.call_once(|| {
                        tracing::warn!(
                            instrument = inst.name(),
                            limit,
                            "metric cardinality limit reached: further attribute sets go to the otel.metric.overflow=true series (counted in cnflow.telemetry.metric_overflow; raise CNFLOW_METRICS_CARDINALITY_LIMIT)"
                        );
                    });
                    key = Key(vec![(OVERFLOW_KEY, V::B(true))]);
                }
                let hists = &mut series.hists;
                let slot = *series.index.entry(key).or_insert_with(|| {
                    hists.push(Hist::new(bounds.len()));
                    hists.len() - 1
                });
                (slot, within)
            }
        };
        series.hists[slot].record(bounds, value);
        if !remember {
            crate::otel::attr::recycle_attrs(pushed);
            return;
        }
        let r = Recent { resource: resource.clone(), inst, attrs: pushed, res_idx: idx, slot };
        if self.recent.len() < RECENT {
            self.recent.push(r);
        } else {
            let old = std::mem::replace(&mut self.recent[self.recent_next], r);
            crate::otel::attr::recycle_attrs(old.attrs);
            self.recent_next = (self.recent_next + 1) % RECENT;
        }
    }

    /// Add `n` messages to a messaging counter on `resource` (same
    /// cardinality limit as the histograms, per counter).
    pub fn count(&mut self, resource: &Arc<Identity>, c: MessageCounter, mut attrs: Attrs, n: u64, ts_ns: u64) {
        self.start_ns.get_or_insert(ts_ns);
        let idx = match self.counters.iter().position(|(r, _)| Arc::ptr_eq(r, resource) || **r == **resource) {
            Some(i) => i,
            None => {
                self.counters.push((resource.clone(), BTreeMap::new()));
                self.counters.len() - 1
            }
        };
        let series = self.counters[idx].1.entry(c).or_default();
        attrs.sort_by(|a, b| a.0.cmp(b.0));
        let mut key = Key(attrs);
        if let Some(c) = series.get_mut(&key) {
            *c += n;
            return;
        }
        if series.len() >= self.limit {
            OVERFLOWED.inc();
            key = Key(vec![(OVERFLOW_KEY, V::B(true))]);
        }
        *series.entry(key).or_default() += n;
    }

    /// Number of series currently held (all resources and instruments).
    pub fn series_count(&self) -> usize {
        self.resources.iter().map(|(_, m)| m.values().map(|s| s.index.len()).sum::<usize>()).sum()
    }

    /// Build the request for everything aggregated so far (and reset it in delta mode).
    /// `own` is the resource for cnflow's own counters (the host); `include_stats` adds them.
    pub fn collect(
        &mut self,
        now_ns: u64,
        own: &Arc<Identity>,
        include_stats: bool,
    ) -> Option<ExportMetricsServiceRequest> {
        let start = self.start_ns.unwrap_or(now_ns).min(now_ns);
        let temporality = match self.temporality {
            Temporality::Cumulative => 2,
            Temporality::Delta => 1,
        };
        let mut out: Vec<ResourceMetrics> = Vec::new();
        for (res, insts) in &self.resources {
            let mut metrics = Vec::new();
            for (inst, series) in insts {
                if series.index.is_empty() {
                    continue;
                }
                let bounds = inst.buckets();
                let data_points = sorted(&series.index)
                    .into_iter()
                    .map(|(attrs, &slot)| (attrs, &series.hists[slot]))
                    .map(|(attrs, h)| HistogramDataPoint {
                        attributes: attr::to_proto(attrs),
                        start_time_unix_nano: start,
                        time_unix_nano: now_ns,
                        count: h.count,
                        sum: Some(h.sum),
                        bucket_counts: h.counts.clone(),
                        explicit_bounds: bounds.to_vec(),
                        exemplars: vec![],
                        flags: 0,
                        min: (h.count > 0).then_some(h.min),
                        max: (h.count > 0).then_some(h.max),
                    })
                    .collect();
                metrics.push(Metric {
                    name: inst.name().into(),
                    description: inst.description().into(),
                    unit: inst.unit().into(),
                    metadata: vec![],
                    data: Some(metric::Data::Histogram(Histogram {
                        data_points,
                        aggregation_temporality: temporality,
                    })),
                });
            }
            if !metrics.is_empty() {
                out.push(resource_metrics(res, metrics));
            }
        }
        for (res, counters) in &self.counters {
            let metrics: Vec<Metric> = counters
                .iter()
                .filter(|(_, series)| !series.is_empty())
                .map(|(c, series)| Metric {
                    name: c.name().into(),
                    description: c.description().into(),
                    unit: c.unit().into(),
                    metadata: vec![],
                    data: Some(metric::Data::Sum(Sum {
                        data_points: sorted(series)
                            .into_iter()
                            .map(|(attrs, n)| NumberDataPoint {
                                attributes: attr::to_proto(attrs),
                                start_time_unix_nano: start,
                                time_unix_nano: now_ns,
                                exemplars: vec![],
                                flags: 0,
                                value: Some(number_data_point::Value::AsInt((*n).min(i64::MAX as u64) as i64)),
                            })
                            .collect(),
                        aggregation_temporality: temporality,
                        is_monotonic: true,
                    })),
                })
                .collect();
            if metrics.is_empty() {
                continue;
            }
            match out.iter_mut().find(|rm| rm.resource.as_ref() == Some(&resource::to_proto(res))) {
                Some(rm) => rm.scope_metrics[0].metrics.extend(metrics),
                None => out.push(resource_metrics(res, metrics)),
            }
        }
        if include_stats {
            let own_metrics = self.stats_metrics(start, now_ns, temporality);
            if !own_metrics.is_empty() {
                match out.iter_mut().find(|rm| rm.resource.as_ref() == Some(&resource::to_proto(own))) {
                    Some(rm) => rm.scope_metrics[0].metrics.extend(own_metrics),
                    None => out.push(resource_metrics(own, own_metrics)),
                }
            }
        }
        if self.temporality == Temporality::Delta {
            // The remembered series go with them.
            for r in self.recent.drain(..) {
                crate::otel::attr::recycle_attrs(r.attrs);
            }
            self.recent_next = 0;
            self.resources.clear();
            self.counters.clear();
            self.start_ns = Some(now_ns);
        }
        (!out.is_empty()).then_some(ExportMetricsServiceRequest { resource_metrics: out })
    }

    fn stats_metrics(&mut self, start: u64, now_ns: u64, temporality: i32) -> Vec<Metric> {
        // Group samples by name, keeping registration order of first appearance.
        let mut by_name: Vec<(&'static str, stats::Kind, Vec<NumberDataPoint>)> = Vec::new();
        for s in stats::snapshot() {
            let mut value = s.value;
            if s.kind == stats::Kind::Counter && self.temporality == Temporality::Delta {
                let prev = self.last_stats.insert((s.name, s.attrs.clone()), s.value).unwrap_or(0);
                value = s.value.saturating_sub(prev);
            }
            let attrs: Attrs = s.attrs.iter().map(|(k, v)| (*k, V::from(v.clone()))).collect();
            let dp = NumberDataPoint {
                attributes: attr::to_proto(&attrs),
                start_time_unix_nano: if s.kind == stats::Kind::Counter { start } else { 0 },
                time_unix_nano: now_ns,
                exemplars: vec![],
                flags: 0,
                value: Some(number_data_point::Value::AsInt(value.min(i64::MAX as u64) as i64)),
            };
            match by_name.iter_mut().find(|(n, _, _)| *n == s.name) {
                Some(e) => e.2.push(dp),
                None => by_name.push((s.name, s.kind, vec![dp])),
            }
        }
        by_name
            .into_iter()
            .map(|(name, kind, data_points)| Metric {
                name: name.into(),
                description: String::new(),
                unit: "{count}".into(),
                metadata: vec![],
                data: Some(match kind {
                    stats::Kind::Counter => {
                        metric::Data::Sum(Sum { data_points, aggregation_temporality: temporality, is_monotonic: true })
                    }
                    stats::Kind::Gauge => metric::Data::Gauge(Gauge { data_points }),
                }),
            })
            .collect()
    }
}

fn resource_metrics(res: &Identity, metrics: Vec<Metric>) -> ResourceMetrics {
    ResourceMetrics {
        resource: Some(resource::to_proto(res)),
        scope_metrics: vec![ScopeMetrics { scope: Some(scope()), metrics, schema_url: SCHEMA_URL.into() }],
        schema_url: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(name: &str) -> Arc<Identity> {
        Arc::new(Identity { attributes: vec![("service.name".into(), name.into())] })
    }

    fn hist(req: &ExportMetricsServiceRequest, name: &str) -> Vec<HistogramDataPoint> {
        req.resource_metrics
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .filter(|m| m.name == name)
            .flat_map(|m| match &m.data {
                Some(metric::Data::Histogram(h)) => h.data_points.clone(),
                _ => vec![],
            })
            .collect()
    }

    proptest::proptest! {
        /// With the recent-series cache: every exchange lands in the series
        /// of its attribute set whatever order they were pushed in, more sets
        /// than the cache holds interleave, the cardinality limit sends every
        /// exchange past it to the overflow series, and delta collections
        /// start afresh. The oracle aggregates sorted sets in a map.
        #[test]
        fn series_as_a_map_of_sorted_sets(
            ops in proptest::collection::vec((0usize..2, 0usize..12, proptest::prelude::any::<bool>(), 1u64..5_000_000, 0u8..20), 1..300),
            limit in 2usize..16,
            delta in proptest::prelude::any::<bool>(),
        ) {
            use std::collections::BTreeMap;
            let resources = [res("a"), res("b")];
            let temporality = if delta { Temporality::Delta } else { Temporality::Cumulative };
            let mut m = Metrics::new(temporality, limit);
            let set = |i: usize, reversed: bool| {
                let mut a: Attrs = vec![
                    ("http.request.method", V::from(["GET", "POST", "PUT"][i % 3])),
                    ("http.response.status_code", V::I(200 + (i / 3) as i64)),
                    ("url.scheme", V::from("http")),
                ];
                if reversed {
                    a.reverse();
                }
                a
            };
            // Oracle: per resource, sorted set → (count, sum in seconds); and the sets seen, in order.
            let mut want: [BTreeMap<String, (u64, f64)>; 2] = Default::default();
            let mut seen: [Vec<usize>; 2] = Default::default();
            let mut t = 1u64;
            let check = |req: Option<ExportMetricsServiceRequest>, want: &[BTreeMap<String, (u64, f64)>; 2]| -> Result<(), proptest::test_runner::TestCaseError> {
                for (ri, name) in ["a", "b"].into_iter().enumerate() {
                    let got: BTreeMap<String, (u64, f64)> = req
                        .iter()
                        .flat_map(|r| &r.resource_metrics)
                        .filter(|rm| rm.resource.as_ref().is_some_and(|r| format!("{:?}", r.attributes).contains(&format!("\"{name}\""))))
                        .flat_map(|rm| &rm.scope_metrics)
                        .flat_map(|sm| &sm.metrics)
                        .flat_map(|mt| match &mt.data {
                            Some(metric::Data::Histogram(h)) => h.data_points.clone(),
                            _ => vec![],
                        })
                        .map(|dp| (format!("{:?}", dp.attributes), (dp.count, dp.sum.unwrap_or(0.0))))
                        .collect();
                    let want: BTreeMap<String, (u64, f64)> = want[ri]
                        .iter()
                        .map(|(k, v)| (k.clone(), *v))
                        .collect();
                    proptest::prop_assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
                    for (k, (c, sum)) in &want {
                        let (gc, gs) = got[k];
                        proptest::prop_assert_eq!(gc, *c, "{}", k);
                        proptest::prop_assert!((gs - sum).abs() < 1e-9, "{} {} {}", k, gs, sum);
                    }
                }
                Ok(())
            };
            for (ri, si, reversed, dur, collect_now) in ops {
                t += 1;
                m.record(&resources[ri], Instrument::HttpServer, set(si, reversed), dur, t);
                let sorted_key = if seen[ri].contains(&si) || seen[ri].len() < limit {
                    if !seen[ri].contains(&si) {
                        seen[ri].push(si);
                    }
                    let mut k = set(si, false);
                    k.sort_by(|a, b| a.0.cmp(b.0));
                    format!("{:?}", attr::to_proto(&k))
                } else {
                    // Past the limit (the overflow series counts towards it once it exists).
                    if !seen[ri].contains(&usize::MAX) {
                        seen[ri].push(usize::MAX);
                    }
                    format!("{:?}", attr::to_proto(&[(OVERFLOW_KEY, V::B(true))]))
                };
                let e = want[ri].entry(sorted_key).or_default();
                e.0 += 1;
                e.1 += Instrument::HttpServer.value(dur);
                if collect_now == 0 {
                    t += 1;
                    check(m.collect(t, &resources[0], false), &want)?;
                    if delta {
                        want = Default::default();
                        seen = Default::default();
                    }
                }
            }
            t += 1;
            check(m.collect(t, &resources[0], false), &want)?;
        }
    }

    #[test]
    fn buckets_inclusive_upper_bounds_and_units() {
        let r = res("a");
        let mut m = Metrics::new(Temporality::Cumulative, 10);
        m.record(&r, Instrument::HttpServer, vec![], 5_000_000, 1); // exactly 0.005 s → first bucket
        m.record(&r, Instrument::HttpServer, vec![], 20_000_000_000, 2); // beyond 10 s → overflow bucket
        m.record(&r, Instrument::RpcServer, vec![], 7_000_000, 3); // 7 ms, recorded in seconds
        let req = m.collect(10, &r, false).unwrap();
        let dp = &hist(&req, "http.server.request.duration")[0];
        assert_eq!(dp.count, 2);
        assert_eq!(dp.bucket_counts[0], 1);
        assert_eq!(*dp.bucket_counts.last().unwrap(), 1);
        assert_eq!(dp.explicit_bounds.len() + 1, dp.bucket_counts.len());
        assert_eq!(dp.start_time_unix_nano, 1);
        let dp = &hist(&req, "rpc.server.call.duration")[0];
        assert_eq!(dp.sum, Some(0.007));
        assert_eq!(dp.explicit_bounds.first(), Some(&0.005));
        // Cumulative keeps counting.
        m.record(&r, Instrument::HttpServer, vec![], 1, 11);
        assert_eq!(hist(&m.collect(12, &r, false).unwrap(), "http.server.request.duration")[0].count, 3);
    }

    #[test]
    fn delta_resets_and_cardinality_is_bounded() {
        let r = res("a");
        let mut m = Metrics::new(Temporality::Delta, 3);
        for i in 0..100 {
            m.record(&r, Instrument::Dns, vec![("dns.question.name", V::from(format!("h{i}.example")))], 1000, i);
        }
        assert_eq!(m.series_count(), 4);
        let req = m.collect(200, &r, false).unwrap();
        let dps = hist(&req, "dns.lookup.duration");
        let overflow = dps.iter().find(|d| d.attributes[0].key == OVERFLOW_KEY).unwrap();
        assert_eq!(overflow.count, 97);
        assert!(m.collect(300, &r, false).is_none());
        m.record(&r, Instrument::Dns, vec![], 1000, 301);
        let req = m.collect(400, &r, false).unwrap();
        let dp = &hist(&req, "dns.lookup.duration")[0];
        assert_eq!((dp.count, dp.start_time_unix_nano), (1, 300));
    }

    #[test]
    fn message_counters_are_monotonic_sums_per_attribute_set() {
        let r = res("svc");
        let mut m = Metrics::new(Temporality::Cumulative, 10);
        let a = |dest: &str| {
            vec![
                ("messaging.system", V::S("rabbitmq".into())),
                ("messaging.destination.name", V::from(dest.to_string())),
            ]
        };
        m.count(&r, MessageCounter::Sent, a("q1"), 1, 1);
        m.count(&r, MessageCounter::Sent, a("q1"), 3, 2);
        m.count(&r, MessageCounter::Sent, a("q2"), 1, 3);
        m.count(&r, MessageCounter::Consumed, a("q1"), 2, 4);
        m.record(&r, Instrument::Messaging, a("q1"), 1000, 5);
        let req = m.collect(10, &r, false).unwrap();
        assert_eq!(req.resource_metrics.len(), 1, "counters share the resource with the histograms");
        let sums = |name: &str| -> Vec<i64> {
            let ms = &req.resource_metrics[0].scope_metrics[0].metrics;
            let met = ms.iter().find(|x| x.name == name).unwrap();
            assert_eq!(met.unit, "{message}");
            match &met.data {
                Some(metric::Data::Sum(s)) => {
                    assert!(s.is_monotonic);
                    s.data_points
                        .iter()
                        .map(|d| match d.value {
                            Some(number_data_point::Value::AsInt(v)) => v,
                            _ => -1,
                        })
                        .collect()
                }
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(sums("messaging.client.sent.messages"), vec![4, 1]);
        assert_eq!(sums("messaging.client.consumed.messages"), vec![2]);
        // Delta: reset after each collection.
        let mut m = Metrics::new(Temporality::Delta, 10);
        m.count(&r, MessageCounter::Sent, a("q1"), 1, 1);
        assert!(m.collect(10, &r, false).is_some());
        assert!(m.collect(20, &r, false).is_none());
    }

    #[test]
    fn own_counters_are_sums_on_the_own_resource() {
        stats::counter("cnflow.test.telemetry_metrics", &[("reason", "x")]).add(5);
        let r = res("host");
        let mut m = Metrics::new(Temporality::Cumulative, 10);
        let req = m.collect(5, &r, true).unwrap();
        let metric = req.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .find(|m| m.name == "cnflow.test.telemetry_metrics")
            .unwrap();
        match &metric.data {
            Some(metric::Data::Sum(s)) => {
                assert!(s.is_monotonic);
                assert_eq!(s.data_points[0].value, Some(number_data_point::Value::AsInt(5)));
            }
            other => panic!("{other:?}"),
        }
    }
}
