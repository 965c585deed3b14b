//! `cnflow replay FILE`: the live pipeline fed from a pcap/pcapng capture.
use crate::capture::pcap::CaptureReader;
use crate::capture::PacketEvent;
use crate::config::AgentConfig;
use crate::exchange::Exchange;
use crate::flow::{FlowConfig, FlowRecorder, FlowSummary, FlowTable};
use crate::pipeline::Pipeline;
use anyhow::{bail, Context, Result};
use std::io::{BufWriter, Write};

#[derive(clap::Args, Debug, Clone)]
pub struct ReplayArgs {
    /// pcap or pcapng file.
    pub file: std::path::PathBuf,
    /// Output: flows (one JSON line per connection: reassembled stream summary), exchanges (JSON lines), text (one line per span), otlp-json.
    #[arg(long, default_value = "text")]
    pub format: String,
    /// Print cnflow's counters to stderr at the end.
    #[arg(long)]
    pub stats: bool,
    /// With --format flows: include the reassembled stream bytes (hex).
    #[arg(long)]
    pub dump: bool,
}

/// Packet-time interval between housekeeping ticks (idle flows, request timeouts).
const TICK_NS: u64 = 1_000_000_000;

/// Where replay results go. New output formats implement this.
trait Output {
    /// Called after every batch of packets with the exchanges produced so far.
    fn exchanges(&mut self, out: &mut dyn Write, exs: Vec<Exchange>) -> Result<()>;
    fn finish(&mut self, _out: &mut dyn Write) -> Result<()> {
        Ok(())
    }
}

struct ExchangesJson;

impl Output for ExchangesJson {
    fn exchanges(&mut self, out: &mut dyn Write, exs: Vec<Exchange>) -> Result<()> {
        for ex in exs {
            serde_json::to_writer(&mut *out, &ex)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }
}

fn output_for(format: &str) -> Result<Box<dyn Output>> {
    Ok(match format {
        // Until the telemetry stage exists, text shows exchanges too.
        "exchanges" | "text" => Box::new(ExchangesJson),
        other => bail!("unknown --format {other:?} (expected flows, exchanges, text)"),
    })
}

pub fn main(args: ReplayArgs) -> Result<()> {
    let cfg = AgentConfig::from_env()?;
    let reader = CaptureReader::open(&args.file)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let res = if args.format == "flows" {
        replay_flows(reader, &cfg, args.dump, &mut out)
    } else {
        let output = output_for(&args.format)?;
        replay_pipeline(reader, &cfg, output, &mut out)
    };
    out.flush()?;
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
    mut push: impl FnMut(&PacketEvent) -> Result<()>,
    mut tick: impl FnMut(u64) -> Result<()>,
) -> Result<()> {
    let mut next_tick = 0u64;
    for ev in reader {
        let ev = ev?;
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
    out: &mut dyn Write,
) -> Result<()> {
    let mut p = Pipeline::new(cfg);
    let pipe = std::cell::RefCell::new(&mut p);
    let res = drive(
        reader,
        |ev| {
            pipe.borrow_mut().push(ev);
            Ok(())
        },
        |now| {
            let mut p = pipe.borrow_mut();
            p.tick(now);
            output.exchanges(out, p.take_exchanges())
        },
    );
    p.finish();
    output.exchanges(out, p.take_exchanges())?;
    output.finish(out)?;
    res
}

fn replay_flows<R: std::io::Read>(
    reader: CaptureReader<R>,
    cfg: &AgentConfig,
    dump: bool,
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

fn print_stats() {
    for s in crate::stats::snapshot() {
        let attrs: Vec<String> = s.attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if attrs.is_empty() {
            eprintln!("{} {}", s.name, s.value);
        } else {
            eprintln!("{}{{{}}} {}", s.name, attrs.join(","), s.value);
        }
    }
}
