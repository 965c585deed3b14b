#!/usr/bin/env python3
"""A stand-in for the agent that does no network work: burns the CPU for
BURST_US microseconds every PERIOD_US, so bench_overhead.sh can show what a
consumer of the same CPU share costs the workload by itself.

    printf '#!/bin/sh\\nBURST_US=200 PERIOD_US=1000 exec %s\\n' "$PWD/integration-tests/perf/burn_cpu.py" > /tmp/burn
    chmod +x /tmp/burn; CNFLOW_BIN=/tmp/burn bash integration-tests/perf/bench_overhead.sh 3 shared

BURST_US=0 burns nothing: an A/A run, where the "agent" costs nothing and
the per-round ratios show the bench's own spread (and drift between the
baseline round and the round after it) on this host:

    printf '#!/bin/sh\\nBURST_US=0 exec %s\\n' "$PWD/integration-tests/perf/burn_cpu.py" > /tmp/null

Arguments (bench_overhead.sh passes `run --format none`) are ignored.
"""
import os
import signal
import sys
import time

burst = int(os.environ.get("BURST_US", "200")) / 1e6
period = int(os.environ.get("PERIOD_US", "1000")) / 1e6
if not 0 <= burst < period:
    sys.exit("burn_cpu.py: need 0 <= BURST_US < PERIOD_US")
# bench_overhead.sh stops the agent with SIGINT, which a background job ignores by default.
signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
print("attached (burn_cpu.py: no capture)", file=sys.stderr, flush=True)
if burst == 0:
    # No wakeups either: the null agent must not even take timer ticks.
    while True:
        signal.pause()
clock = time.perf_counter
while True:
    start = clock()
    while clock() - start < burst:
        pass
    time.sleep(period - burst)
