//! `cnflow replay FILE`: the live pipeline fed from a pcap/pcapng capture.
use crate::agent::config::AgentConfig;
use crate::agent::pipeline::PacketPipeline;
use crate::capture::pcap::CaptureReader;
use crate::capture::PacketEvent;
use crate::exchange::Exchange;
use crate::flow::{FlowConfig, FlowRecorder, FlowSummary, FlowTable};
use anyhow::{bail, Context, Result};
use std::io::{BufWriter, Write};

#[derive(clap::Args, Debug, Clone)]
pub struct ReplayArgs {
    /// pcap or pcapng file. Several (with --format otlp-json): each is a
    /// capture taken on its own node (own flow table, host.name = the file
    /// name), and the CLIENT and SERVER spans of one exchange seen in two of
    /// them are joined into one trace, as the gateway does with
    /// CNFLOW_GATEWAY_STITCH_WINDOW_MS.
    #[arg(required = true, num_args = 1..)]
    pub file: Vec<std::path::PathBuf>,
    /// Output: flows (one JSON line per connection: reassembled stream summary), exchanges (JSON lines), text (one line per span), otlp-json, otlp (length-delimited protobuf records, for files), none (spans and metrics built as the agent does, nothing printed: OTLP export only, or the agent's own cost in benchmarks), count (exchanges per protocol only; for benchmarks).
    #[arg(long, default_value = "text")]
    pub format: String,
    /// Print cnflow's counters to stderr at the end.
    #[arg(long)]
    pub stats: bool,
    /// With --format flows: include the reassembled stream bytes (hex).
    #[arg(long)]
    pub dump: bool,
    /// Progress line on stderr (packets, bytes, exchanges, rate), refreshed every second:
    /// auto = only when stderr is a terminal.
    #[arg(long, default_value = "auto", value_parser = ["auto", "always", "never"])]
    pub progress: String,
}

/// The progress line of a long replay. Looks at the clock once every 4096
/// packets, so it costs nothing measurable per packet.
struct Progress {
    on: bool,
    started: std::time::Instant,
    last: std::cell::Cell<std::time::Instant>,
    packets: std::cell::Cell<u64>,
    bytes: std::cell::Cell<u64>,
    exchanges: std::cell::Cell<u64>,
}

impl Progress {
    fn new(mode: &str) -> Self {
        let on = match mode {
            "always" => true,
            "never" => false,
            _ => std::io::IsTerminal::is_terminal(&std::io::stderr()),
        };
        let now = std::time::Instant::now();
        Progress { on, started: now, last: now.into(), packets: 0.into(), bytes: 0.into(), exchanges: 0.into() }
    }
    fn packet(&self, ev: &PacketEvent) {
        let n = self.packets.get() + 1;
        self.packets.set(n);
        self.bytes.set(self.bytes.get() + u64::from(ev.payload_len));
        if self.on && n.is_multiple_of(4096) && self.last.get().elapsed() >= std::time::Duration::from_secs(1) {
            self.last.set(std::time::Instant::now());
            self.print('\r');
        }
    }
    fn exchanges(&self, n: usize) {
        self.exchanges.set(self.exchanges.get() + n as u64);
    }
    fn print(&self, end: char) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let p = self.packets.get();
        eprint!(
            "replay: {p} packets, {:.1} MB payload, {} exchanges, {:.0} packets/s{end}",
            self.bytes.get() as f64 / 1e6,
            self.exchanges.get(),
            p as f64 / secs
        );
    }
    fn done(&self) {
        if self.on {
            self.print('\n');
        }
    }
}

/// Packet-time interval between housekeeping ticks (idle flows, request timeouts).
const TICK_NS: u64 = 1_000_000_000;

/// Packets between hand-overs of the exchanges decoded so far, as the agent
/// hands them over after each ring batch: a second of a busy capture held
/// every exchange of that second (memory growing with the packet rate, and
/// the `Vec` doubling and copying them, 3.2% of a Redis replay).
const BATCH_PACKETS: u32 = 1024;

/// Where replay results go. New output formats implement this.
trait Output {
    /// Called after every batch of packets with the exchanges produced so far
    /// (left in `exs` or not: the caller clears it and hands it back to the
    /// pipeline, as the agent does); `now_ns` is the capture time reached,
    /// 0 between housekeeping ticks.
    fn exchanges(&mut self, out: &mut dyn Write, exs: &mut Vec<Exchange>, now_ns: u64) -> Result<()>;
    /// Housekeeping at capture time `now_ns`, after that tick's exchanges.
    fn tick(&mut self, _out: &mut dyn Write, _now_ns: u64) -> Result<()> {
        Ok(())
    }
    /// Every packet, before the flow table sees it (L4 network metrics).
    fn packet(&mut self, _ev: &PacketEvent) {}
    /// End of the capture; `now_ns` is the last packet's time.
    fn finish(&mut self, _out: &mut dyn Write, _now_ns: u64) -> Result<()> {
        Ok(())
    }
    /// Decodes what only spans show (`DecodeConfig::span_fields`; as the
    /// agent, not when only metrics are recorded).
    fn span_fields(&self) -> bool {
        true
    }
}

struct ExchangesJson;

impl Output for ExchangesJson {
    fn exchanges(&mut self, out: &mut dyn Write, exs: &mut Vec<Exchange>, _now_ns: u64) -> Result<()> {
        for ex in exs.iter() {
            serde_json::to_writer(&mut *out, ex)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }
}

/// Decode and pair only, then print how many exchanges each protocol gave
/// (benchmarks: measures the pipeline without output formatting).
#[derive(Default)]
struct Count(std::collections::BTreeMap<&'static str, u64>);

impl Output for Count {
    fn exchanges(&mut self, _out: &mut dyn Write, exs: &mut Vec<Exchange>, _now_ns: u64) -> Result<()> {
        for ex in exs.drain(..) {
            let name = ex.protocol.name();
            *self.0.entry(name).or_default() += 1;
        }
        Ok(())
    }
    fn finish(&mut self, out: &mut dyn Write, _now_ns: u64) -> Result<()> {
        let total: u64 = self.0.values().sum();
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(out, "exchanges={total} {}", parts.join(" "))?;
        Ok(())
    }
}

/// Spans and metrics through the telemetry sink; it writes to stdout itself
/// (and to OTLP when an endpoint is configured). Time is capture time: the
/// latest exchange end seen, so output is the same on every run.
struct Spans {
    sink: crate::telemetry::TelemetrySink,
    now_ns: u64,
}

impl Output for Spans {
    fn packet(&mut self, ev: &PacketEvent) {
        self.sink.observe_packet(ev);
    }
    fn span_fields(&self) -> bool {
        self.sink.spans_wanted()
    }
    fn exchanges(&mut self, _out: &mut dyn Write, exs: &mut Vec<Exchange>, now_ns: u64) -> Result<()> {
        self.now_ns = self.now_ns.max(now_ns);
        for ex in exs.iter() {
            self.now_ns = self.now_ns.max(ex.end_ns);
            self.sink.record(ex);
        }
        Ok(())
    }
    fn tick(&mut self, _out: &mut dyn Write, now_ns: u64) -> Result<()> {
        self.now_ns = self.now_ns.max(now_ns);
        if self.now_ns != 0 {
            self.sink.expire_network(now_ns);
            self.sink.flush(self.now_ns);
        }
        Ok(())
    }
    fn finish(&mut self, _out: &mut dyn Write, now_ns: u64) -> Result<()> {
        self.now_ns = self.now_ns.max(now_ns);
        self.sink.finish(self.now_ns);
        Ok(())
    }
}

/// Seed of replay's span/trace ids: fixed, so a capture always gives the same ids.
const REPLAY_ID_SEED: u64 = 0x636e_666c_6f77;

fn telemetry_output(
    format: Option<crate::telemetry::Format>,
    cfg: &AgentConfig,
    env: &[(String, String)],
    exporter: Option<std::sync::Arc<crate::export::Exporter>>,
) -> Result<Box<dyn Output>> {
    use crate::telemetry::{resource, IdGen, SinkOptions, TelemetryConfig, TelemetrySink};
    let host = std::sync::Arc::new(resource::host_identity(env.iter().cloned())?);
    let mut opts = SinkOptions::new(TelemetryConfig::from_vars(env.iter().cloned())?, host);
    opts.mask_query_values = cfg.mask_query_values;
    opts.ids = IdGen::Seeded(REPLAY_ID_SEED);
    opts.sampling = crate::telemetry::sampling::Policy::from_vars(env.iter().cloned())?;
    if let Some(format) = format {
        opts.outputs.push(crate::telemetry::Output::Write(format, Box::new(BufWriter::new(std::io::stdout()))));
    }
    if let Some(e) = exporter {
        opts.outputs.push(crate::telemetry::Output::Export(e));
    }
    Ok(Box::new(Spans { sink: TelemetrySink::new(opts), now_ns: 0 }))
}

/// OTLP export from replay when OTEL_EXPORTER_OTLP_(TRACES_|METRICS_)ENDPOINT is set.
fn start_exporter(
    env: &[(String, String)],
) -> Result<Option<(tokio::runtime::Runtime, std::sync::Arc<crate::export::Exporter>)>> {
    use crate::export::{Exporter, OtlpExportConfig, Signal};
    let export = OtlpExportConfig::from_vars(env.iter().cloned(), &[Signal::Traces, Signal::Metrics])?;
    let (traces, metrics) = (export.traces, export.metrics);
    if traces.is_none() && metrics.is_none() {
        return Ok(None);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let exporter = {
        let _guard = rt.enter();
        Exporter::start(traces, metrics, None)?
    };
    Ok(Some((rt, std::sync::Arc::new(exporter))))
}

fn output_for(
    format: &str,
    cfg: &AgentConfig,
    env: &[(String, String)],
    exporter: Option<std::sync::Arc<crate::export::Exporter>>,
) -> Result<Box<dyn Output>> {
    Ok(match format {
        "exchanges" => Box::new(ExchangesJson),
        "count" => Box::<Count>::default(),
        "text" => telemetry_output(Some(crate::telemetry::Format::Text), cfg, env, exporter)?,
        "otlp-json" => telemetry_output(Some(crate::telemetry::Format::OtlpJson), cfg, env, exporter)?,
        "otlp" => telemetry_output(Some(crate::telemetry::Format::Otlp), cfg, env, exporter)?,
        // As `cnflow agent --format none`: the sink runs, only an exporter (if configured) gets its output.
        "none" => telemetry_output(None, cfg, env, exporter)?,
        other => bail!("unknown --format {other:?} (expected flows, exchanges, text, otlp-json, otlp, none, count)"),
    })
}

pub fn main(args: ReplayArgs) -> Result<()> {
    // Telemetry and export settings are parsed only for the formats that use them.
    let env = super::read_env();
    let cfg = AgentConfig::from_vars(env.iter().cloned())?;
    if args.file.len() > 1 {
        let res = replay_nodes(&args.file, &cfg, &env, &args.format);
        if args.stats {
            print_stats();
        }
        return res;
    }
    let reader = CaptureReader::open(&args.file[0])?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let progress = Progress::new(&args.progress);
    let res = if args.format == "flows" {
        replay_flows(reader, &cfg, args.dump, &progress, &mut out)
    } else {
        let export = if args.format == "exchanges" || args.format == "count" { None } else { start_exporter(&env)? };
        let output = output_for(&args.format, &cfg, &env, export.as_ref().map(|(_, e)| e.clone()))?;
        let res = replay_pipeline(reader, &cfg, output, &progress, &mut out);
        if let Some((rt, exporter)) = export {
            // The sink (and its clone of the exporter) is gone once replay_pipeline returned.
            match std::sync::Arc::try_unwrap(exporter) {
                Ok(e) => rt.block_on(e.shutdown(std::time::Duration::from_secs(10))),
                Err(_) => tracing::warn!("OTLP exporter still shared at exit; not flushed"),
            }
        }
        res
    };
    out.flush()?;
    progress.done();
    if args.stats {
        print_stats();
    }
    res
}

/// Drive `push` over the capture with periodic ticks at packet time.
/// A corrupt file still ends the replay cleanly (flows closed, output
/// written) before the error is returned.
fn drive<R: std::io::Read>(
    reader: CaptureReader<R>,
    progress: &Progress,
    mut push: impl FnMut(&PacketEvent) -> Result<()>,
    mut tick: impl FnMut(u64) -> Result<()>,
) -> Result<()> {
    let mut next_tick = 0u64;
    for ev in reader {
        let ev = ev?;
        progress.packet(&ev);
        push(&ev)?;
        if ev.ts_ns >= next_tick {
            if next_tick != 0 {
                tick(ev.ts_ns)?;
            }
            next_tick = ev.ts_ns.saturating_add(TICK_NS);
        }
    }
    Ok(())
}

fn replay_pipeline<R: std::io::Read>(
    reader: CaptureReader<R>,
    cfg: &AgentConfig,
    mut output: Box<dyn Output>,
    progress: &Progress,
    out: &mut dyn Write,
) -> Result<()> {
    let mut p = PacketPipeline::with_span_fields(cfg, output.span_fields());
    let pipe = std::cell::RefCell::new(&mut p);
    let last_ts = std::cell::Cell::new(0u64);
    let sink = std::cell::RefCell::new(&mut output);
    let out = std::cell::RefCell::new(out);
    let mut since_batch = 0u32;
    // Handed back as the agent does after each batch: the next batch's
    // exchanges go into its capacity (no `Vec` grown from empty).
    let hand_over = |p: &mut PacketPipeline, now: u64| {
        let mut exs = p.take_exchanges();
        progress.exchanges(exs.len());
        let res = sink.borrow_mut().exchanges(*out.borrow_mut(), &mut exs, now);
        p.recycle_exchanges(exs);
        res
    };
    let res = drive(
        reader,
        progress,
        |ev| {
            last_ts.set(last_ts.get().max(ev.ts_ns));
            let mut p = pipe.borrow_mut();
            p.push(ev);
            sink.borrow_mut().packet(ev);
            since_batch += 1;
            if since_batch == BATCH_PACKETS {
                since_batch = 0;
                hand_over(&mut p, 0)?;
            }
            Ok(())
        },
        |now| {
            let mut p = pipe.borrow_mut();
            p.tick(now);
            hand_over(&mut p, now)?;
            sink.borrow_mut().tick(*out.borrow_mut(), now)
        },
    );
    let p = pipe.into_inner();
    p.finish();
    let last = last_ts.get();
    hand_over(p, last)?;
    let out = out.into_inner();
    let output = sink.into_inner();
    output.tick(out, last)?;
    output.finish(out, last)?;
    res
}

fn replay_flows<R: std::io::Read>(
    reader: CaptureReader<R>,
    cfg: &AgentConfig,
    dump: bool,
    progress: &Progress,
    out: &mut dyn Write,
) -> Result<()> {
    let mut table = FlowTable::new(&FlowConfig::from(cfg));
    let mut rec = FlowRecorder::new(dump);
    let state = std::cell::RefCell::new((&mut table, &mut rec));
    let write = |out: &mut dyn Write, done: Vec<FlowSummary>| -> Result<()> {
        for s in done {
            serde_json::to_writer(&mut *out, &s)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    };
    let res = drive(
        reader,
        progress,
        |ev| {
            let (t, r) = &mut *state.borrow_mut();
            t.push(ev, *r);
            Ok(())
        },
        |now| {
            let (t, r) = &mut *state.borrow_mut();
            t.expire(now, *r);
            write(out, r.take())
        },
    );
    table.finish(&mut rec);
    write(out, rec.take()).context("writing flows")?;
    res
}

/// Several captures, one node each, stitched (see [`ReplayArgs::file`]).
/// Every capture is replayed in full first (capture time is per node: clocks
/// may differ), then all spans go through one stitcher whose window never
/// ends; halves without a partner are written unjoined at the end.
fn replay_nodes(files: &[std::path::PathBuf], cfg: &AgentConfig, env: &[(String, String)], format: &str) -> Result<()> {
    use crate::gateway::stitch::{StitchConfig, Stitcher};
    use crate::telemetry::{resource, Collected, IdGen, SinkOptions, TelemetryConfig, TelemetrySink};
    if format != "otlp-json" {
        bail!("several captures are stitched into OTLP: use --format otlp-json");
    }
    let keep_keys = env.iter().any(|(k, v)| k == "CNFLOW_GATEWAY_STITCH_KEEP_KEYS" && v.trim() == "true");
    let stitcher = Stitcher::new(StitchConfig {
        window: std::time::Duration::MAX,
        max_entries: 1 << 22,
        keep_keys,
        service_graph_edges: 0,
    });
    let progress = Progress::new("never");
    let mut metrics = Vec::new();
    let mut traces = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let mut host = resource::host_identity(env.iter().cloned())?;
        let node = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| format!("node-{i}"));
        match host.attributes.iter_mut().find(|(k, _)| k == "host.name") {
            Some(h) => h.1 = node,
            None => host.attributes.push(("host.name".into(), node)),
        }
        let mut opts = SinkOptions::new(TelemetryConfig::from_vars(env.iter().cloned())?, std::sync::Arc::new(host));
        opts.mask_query_values = cfg.mask_query_values;
        // Distinct ids per node, still the same on every run.
        opts.ids = IdGen::Seeded(REPLAY_ID_SEED.wrapping_add(i as u64 + 1));
        opts.sampling = crate::telemetry::sampling::Policy::from_vars(env.iter().cloned())?;
        let collected = std::sync::Arc::new(parking_lot::Mutex::new(Collected::default()));
        opts.outputs.push(crate::telemetry::Output::Collect(collected.clone()));
        let output = Box::new(Spans { sink: TelemetrySink::new(opts), now_ns: 0 });
        let reader = CaptureReader::open(file).with_context(|| format!("{}", file.display()))?;
        replay_pipeline(reader, cfg, output, &progress, &mut std::io::sink())?;
        let mut c = collected.lock();
        traces.append(&mut c.traces);
        metrics.append(&mut c.metrics);
    }
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for mut r in traces {
        stitcher.ingest_at(&mut r, 0);
        if !r.resource_spans.is_empty() {
            json_line(&mut out, &r)?;
        }
    }
    let rest = stitcher.drain();
    if !rest.resource_spans.is_empty() {
        json_line(&mut out, &rest)?;
    }
    for m in &metrics {
        json_line(&mut out, m)?;
    }
    out.flush()?;
    Ok(())
}

/// One OTLP request as a JSON line (the otlp-json format).
fn json_line(out: &mut dyn Write, v: &impl serde::Serialize) -> Result<()> {
    serde_json::to_writer(&mut *out, v)?;
    out.write_all(b"\n")?;
    Ok(())
}

fn print_stats() {
    for s in crate::stats::snapshot() {
        eprintln!("{} {}", s.key(), s.value);
    }
}
