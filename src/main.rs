use clap::{Parser, Subcommand};

// mimalloc instead of glibc malloc: the agent allocates and frees small
// objects per packet and per exchange (decoder buffers, span records); glibc's
// arena bookkeeping (_int_malloc/_int_free/malloc_consolidate) was ~18% of the
// agent's CPU under a Redis load (perf, 2026-12-05), and mimalloc's per-thread
// free lists also avoid glibc's per-arena fragmentation in the long-running
// gateway.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// eBPF network observability for Kubernetes with OpenTelemetry output.
#[derive(Parser)]
#[command(name = "cnflow", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Embedded default for one Linux host: capture on all interfaces, print spans on stdout.
    Run(cnflow::cmd::run::RunArgs),
    /// Node agent (DaemonSet): capture, enrich with Kubernetes metadata, export OTLP.
    Agent(cnflow::cmd::run::RunArgs),
    /// OTLP gateway: receive from agents, GeoIP-enrich, batch, export.
    Gateway(cnflow::cmd::gateway::GatewayArgs),
    /// Run the capture pipeline on a pcap/pcapng file.
    Replay(cnflow::cmd::replay::ReplayArgs),
    /// Print the effective configuration (from environment variables).
    Config(cnflow::cmd::show_config::ConfigArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // run/agent/gateway set up logging inside their runtime, with self-telemetry.
    if matches!(cli.cmd, Cmd::Replay(_) | Cmd::Config(_)) {
        cnflow::cmd::init_logging();
    }
    let res = match cli.cmd {
        Cmd::Run(a) => cnflow::cmd::run::main(a, cnflow::cmd::run::Mode::Standalone),
        Cmd::Agent(a) => cnflow::cmd::run::main(a, cnflow::cmd::run::Mode::Agent),
        Cmd::Gateway(a) => cnflow::cmd::gateway::main(a),
        Cmd::Replay(a) => cnflow::cmd::replay::main(a),
        Cmd::Config(a) => cnflow::cmd::show_config::main(a),
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cnflow: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
