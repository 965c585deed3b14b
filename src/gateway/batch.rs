//! Batching like the OpenTelemetry Collector's batch processor: a batch is
//! sent when it reaches `size` items or `timeout` after its first item,
//! requests are merged by resource (and scope), and batches above `max_size`
//! (if set) are split.
use crate::export::payload::{metric_points, Payload};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use parking_lot::Mutex;
use prost::Message;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Bytes counted for opening a resource or scope entry in a split request
/// besides its own fields: its tag and the largest length varint.
pub const SEG_OVERHEAD: usize = 6;

/// Merge/split for the three request types (resource → scope → leaf items).
macro_rules! merge_split {
    ($merge:ident, $split:ident, $req:ty, $rfield:ident, $sfield:ident, $leaf:ident, $weight:expr) => {
        /// One request with each distinct resource (and scope inside it) once.
        pub fn $merge(reqs: Vec<$req>) -> $req {
            let mut out = <$req>::default();
            let mut by_resource: HashMap<Vec<u8>, usize> = HashMap::new();
            let mut by_scope: Vec<HashMap<Vec<u8>, usize>> = Vec::new();
            for req in reqs {
                for mut r in req.$rfield {
                    let rkey =
                        (r.resource.as_ref().map(|x| x.encode_to_vec()).unwrap_or_default(), r.schema_url.clone());
                    let rkey = [rkey.0, rkey.1.into_bytes()].join(&0xffu8);
                    let ri = *by_resource.entry(rkey).or_insert_with(|| {
                        out.$rfield.push(Default::default());
                        by_scope.push(HashMap::new());
                        let i = out.$rfield.len() - 1;
                        out.$rfield[i].resource = r.resource.take();
                        out.$rfield[i].schema_url = std::mem::take(&mut r.schema_url);
                        i
                    });
                    for mut s in r.$sfield {
                        let skey =
                            (s.scope.as_ref().map(|x| x.encode_to_vec()).unwrap_or_default(), s.schema_url.clone());
                        let skey = [skey.0, skey.1.into_bytes()].join(&0xffu8);
                        let dst = &mut out.$rfield[ri].$sfield;
                        let si = *by_scope[ri].entry(skey).or_insert_with(|| {
                            dst.push(Default::default());
                            let i = dst.len() - 1;
                            dst[i].scope = s.scope.take();
                            dst[i].schema_url = std::mem::take(&mut s.schema_url);
                            i
                        });
                        dst[si].$leaf.append(&mut s.$leaf);
                    }
                }
            }
            out
        }

        /// Splits into requests of at most `max` items and about `max_bytes`
        /// encoded bytes (an upper estimate, see `wire::merge_split`); a
        /// single leaf heavier than either travels alone.
        pub fn $split(req: $req, max: usize, max_bytes: usize) -> Vec<$req> {
            use prost::encoding::message::encoded_len as field_len;
            let mut out: Vec<$req> = Vec::new();
            let mut cur = <$req>::default();
            let (mut cur_n, mut cur_bytes) = (0usize, 0usize);
            for r in req.$rfield {
                // The resource entry without its scopes, and each scope entry
                // without its leaves, as `wire::merge_split` counts them.
                let rhead = r.encoded_len() - r.$sfield.iter().map(|s| field_len(2, s)).sum::<usize>();
                let (resource, rschema) = (r.resource, r.schema_url);
                for s in r.$sfield {
                    let shead = s.encoded_len() - s.$leaf.iter().map(|l| field_len(2, l)).sum::<usize>();
                    let (scope, sschema) = (s.scope, s.schema_url);
                    for leaf in s.$leaf {
                        let w: usize = $weight(&leaf);
                        let lbytes = field_len(2, &leaf);
                        // Whether the last resource and scope entries of `cur` are this
                        // leaf's (compared once per leaf: a resource compares its attributes).
                        let last = cur.$rfield.last();
                        let mut same_r = last.is_some_and(|x| x.resource == resource && x.schema_url == rschema);
                        let mut same_s = same_r
                            && last
                                .and_then(|x| x.$sfield.last())
                                .is_some_and(|x| x.scope == scope && x.schema_url == sschema);
                        let open = (if same_r { 0 } else { rhead + SEG_OVERHEAD })
                            + (if same_s { 0 } else { shead + SEG_OVERHEAD });
                        if cur_n > 0 && (cur_n + w > max || cur_bytes + open + lbytes > max_bytes) {
                            out.push(std::mem::take(&mut cur));
                            (cur_n, cur_bytes) = (0, 0);
                            (same_r, same_s) = (false, false);
                        }
                        // Reuse the last resource/scope entry when it is the same one.
                        if !same_r {
                            cur.$rfield.push(Default::default());
                            let lr = cur.$rfield.last_mut().expect("pushed above");
                            lr.resource = resource.clone();
                            lr.schema_url = rschema.clone();
                            cur_bytes += rhead + SEG_OVERHEAD;
                        }
                        let lr = cur.$rfield.last_mut().expect("pushed above");
                        if !same_s {
                            lr.$sfield.push(Default::default());
                            let ls = lr.$sfield.last_mut().expect("pushed above");
                            ls.scope = scope.clone();
                            ls.schema_url = sschema.clone();
                            cur_bytes += shead + SEG_OVERHEAD;
                        }
                        lr.$sfield.last_mut().expect("pushed above").$leaf.push(leaf);
                        cur_n += w;
                        cur_bytes += lbytes;
                    }
                }
            }
            if cur_n > 0 {
                out.push(cur);
            }
            out
        }
    };
}

merge_split!(merge_traces, split_traces, ExportTraceServiceRequest, resource_spans, scope_spans, spans, |_: &_| 1);
merge_split!(merge_logs, split_logs, ExportLogsServiceRequest, resource_logs, scope_logs, log_records, |_: &_| 1);
merge_split!(
    merge_metrics,
    split_metrics,
    ExportMetricsServiceRequest,
    resource_metrics,
    scope_metrics,
    metrics,
    metric_points
);

/// Merges same-signal payloads and splits the result at `max` items and
/// `max_bytes` encoded bytes (0 = no limit).
pub fn merge_and_split(parts: Vec<Payload>, max: usize, max_bytes: usize) -> Vec<Payload> {
    let Some(first) = parts.first() else { return vec![] };
    let max = if max == 0 { usize::MAX } else { max };
    let max_bytes = if max_bytes == 0 { usize::MAX } else { max_bytes };
    if parts.iter().any(|p| matches!(p, Payload::Encoded(_))) {
        return merge_and_split_encoded(parts, max, max_bytes);
    }
    macro_rules! go {
        ($variant:ident, $merge:ident, $split:ident) => {{
            let reqs = parts.into_iter().filter_map(|p| if let Payload::$variant(r) = p { Some(r) } else { None });
            let merged = $merge(reqs.collect());
            if max == usize::MAX && max_bytes == usize::MAX {
                vec![Payload::$variant(merged)]
            } else {
                $split(merged, max, max_bytes).into_iter().map(Payload::$variant).collect()
            }
        }};
    }
    match first {
        Payload::Traces(_) => go!(Traces, merge_traces, split_traces),
        Payload::Metrics(_) => go!(Metrics, merge_metrics, split_metrics),
        Payload::Logs(_) => go!(Logs, merge_logs, split_logs),
        Payload::Encoded(_) => unreachable!("handled above"),
    }
}

/// `merge_and_split` on the wire when the batch holds encoded requests
/// (decoded ones, e.g. from JSON receivers, are encoded to join them).
/// Metrics (item weight = data points) and the impossible malformed batch
/// take the decoded path.
fn merge_and_split_encoded(parts: Vec<Payload>, max: usize, max_bytes: usize) -> Vec<Payload> {
    let signal = parts[0].signal();
    if signal != crate::export::Signal::Metrics {
        let bytes: Vec<bytes::Bytes> = parts.iter().map(Payload::wire_bytes).collect();
        let slices: Vec<&[u8]> = bytes.iter().map(|b| &b[..]).collect();
        if let Ok(out) = super::wire::merge_split(&slices, max, max_bytes) {
            return out
                .into_iter()
                .map(|(b, items)| Payload::Encoded(crate::export::payload::Encoded { signal, bytes: b.into(), items }))
                .collect();
        }
    }
    // Encoded parts were checked on receipt, so a decode error here is a bug:
    // say so rather than drop silently.
    let decoded: Vec<Payload> = parts
        .into_iter()
        .filter_map(|p| {
            let items = p.items();
            p.decoded().inspect_err(|e| tracing::error!(items, "dropping a batch part that does not decode: {e}")).ok()
        })
        .collect();
    let unlimited = |m: usize| if m == usize::MAX { 0 } else { m };
    merge_and_split(decoded, unlimited(max), unlimited(max_bytes))
}

#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    pub size: usize,
    pub timeout: Duration,
    pub max_size: usize,
    /// Upper bound of an exported request's encoded size (0 = none).
    pub max_bytes: usize,
}

struct Pending {
    parts: Vec<Payload>,
    items: usize,
    started: Option<Instant>,
}

/// Where full batches go (the merged, split requests of one batch). Called
/// with the batcher's lock held, so admission (`try_add`) and hand-over are
/// atomic: the caller sees a consistent total, and a journal written under
/// the same lock holds exactly the open batch.
pub type Sink = Box<dyn Fn(Vec<Payload>) + Send + Sync>;

pub struct Batcher {
    cfg: BatchConfig,
    pending: Mutex<Pending>,
    notify: Notify,
    sink: Sink,
}

impl Batcher {
    pub fn new(cfg: BatchConfig, sink: Sink) -> Arc<Self> {
        Arc::new(Self {
            cfg,
            pending: Mutex::new(Pending { parts: vec![], items: 0, started: None }),
            notify: Notify::new(),
            sink,
        })
    }

    /// Items waiting in the current batch.
    pub fn pending_items(&self) -> usize {
        self.pending.lock().items
    }

    /// Adds `p` if `admit(items already pending)` allows it; flushes when the batch is full.
    pub fn try_add(&self, p: Payload, admit: impl FnOnce(usize) -> bool) -> bool {
        matches!(self.try_add_recorded(p, admit, |_| Ok(())), Ok(Some(())))
    }

    /// `try_add` that first runs `record` on an admitted request, under the
    /// same lock (the journal append); a `record` error leaves the batch unchanged.
    /// Ok(None) = not admitted.
    pub fn try_add_recorded<R>(
        &self,
        p: Payload,
        admit: impl FnOnce(usize) -> bool,
        record: impl FnOnce(&Payload) -> std::io::Result<R>,
    ) -> std::io::Result<Option<R>> {
        let n = p.items();
        let mut g = self.pending.lock();
        if !admit(g.items) {
            return Ok(None);
        }
        let r = record(&p)?;
        g.parts.push(p);
        g.items += n;
        if g.items >= self.cfg.size {
            self.flush_locked(&mut g);
        } else if g.started.is_none() {
            g.started = Some(Instant::now());
            drop(g);
            self.notify.notify_one();
        }
        Ok(Some(r))
    }

    fn flush_locked(&self, g: &mut Pending) {
        let parts = std::mem::take(&mut g.parts);
        g.items = 0;
        g.started = None;
        if !parts.is_empty() {
            (self.sink)(merge_and_split(parts, self.cfg.max_size, self.cfg.max_bytes));
        }
    }

    pub fn flush(&self) {
        self.flush_locked(&mut self.pending.lock());
    }

    /// Sends batches whose timeout expired; runs until the task is aborted.
    pub async fn run_timer(self: Arc<Self>) {
        loop {
            let started = self.pending.lock().started;
            match started {
                None => self.notify.notified().await,
                Some(s) => {
                    tokio::time::sleep_until(s + self.cfg.timeout).await;
                    let mut g = self.pending.lock();
                    if g.started.is_some_and(|s| s + self.cfg.timeout <= Instant::now()) {
                        self.flush_locked(&mut g);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, InstrumentationScope, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn req(service: &str, scope: &str, names: &[&str]) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue { value: Some(Value::StringValue(service.into())) }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope { name: scope.into(), ..Default::default() }),
                    spans: names.iter().map(|n| Span { name: n.to_string(), ..Default::default() }).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn names(r: &ExportTraceServiceRequest) -> Vec<Vec<Vec<String>>> {
        r.resource_spans
            .iter()
            .map(|rs| rs.scope_spans.iter().map(|ss| ss.spans.iter().map(|s| s.name.clone()).collect()).collect())
            .collect()
    }

    #[test]
    fn merges_by_resource_and_scope() {
        let m = merge_traces(vec![
            req("a", "s1", &["1"]),
            req("b", "s1", &["2"]),
            req("a", "s1", &["3"]),
            req("a", "s2", &["4"]),
        ]);
        assert_eq!(names(&m), vec![vec![vec!["1", "3"], vec!["4"]], vec![vec!["2"]]]);
    }

    #[test]
    fn splits_at_max_keeping_resources() {
        let m = merge_traces(vec![req("a", "s", &["1", "2", "3"]), req("b", "s", &["4", "5"])]);
        let parts = split_traces(m, 2, usize::MAX);
        let got: Vec<_> = parts.iter().map(names).collect();
        assert_eq!(
            got,
            vec![vec![vec![vec!["1", "2"]]], vec![vec![vec!["3"]], vec![vec!["4"]]], vec![vec![vec!["5"]]],]
        );
        assert_eq!(parts[1].resource_spans[1].resource, req("b", "s", &[]).resource_spans[0].resource);
    }

    #[tokio::test]
    async fn flushes_on_size_and_on_timeout() {
        let out = Arc::new(Mutex::new(Vec::<Payload>::new()));
        let o = out.clone();
        let b = Batcher::new(
            BatchConfig { size: 3, timeout: Duration::from_millis(50), max_size: 0, max_bytes: 0 },
            Box::new(move |ps| o.lock().extend(ps)),
        );
        tokio::spawn(b.clone().run_timer());
        assert!(b.try_add(Payload::Traces(req("a", "s", &["1", "2"])), |_| true));
        assert!(out.lock().is_empty());
        assert!(b.try_add(Payload::Traces(req("a", "s", &["3"])), |_| true));
        assert_eq!(out.lock().len(), 1, "size reached");
        assert!(b.try_add(Payload::Traces(req("a", "s", &["4"])), |_| true));
        assert!(!b.try_add(Payload::Traces(req("a", "s", &["5"])), |pending| pending == 0));
        let t = std::time::Instant::now();
        while out.lock().len() < 2 {
            assert!(t.elapsed() < Duration::from_secs(5), "timeout flush");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(out.lock()[1].items(), 1);
    }
}
