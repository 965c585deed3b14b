#!/usr/bin/env bash
# Agent memory with many concurrent TCP flows: a client opens N connections to a
# server in another netns (half of them exchange a Redis-style request/response
# every second, half stay idle) while the agent captures on the server's veth.
# Reports the agent's peak RSS (VmRSS), split into the ring buffer mapping
# (the kernel maps the BPF ring's data pages twice, back to back, so VmRSS
# counts a 32 MiB ring as 64 MiB although it occupies 32 MiB) and everything
# else (heap, binary), next to the configured ring size.
# Usage: bench_memory.sh [N_CONNECTIONS]   (root)
#        CNFLOW_BIN=path to use an already built binary (default: cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-10000}
if [ -n "${CNFLOW_BIN:-}" ]; then
  bin=$(realpath "$CNFLOW_BIN")
else
  cargo build --release -q --bin cnflow
  bin=$PWD/target/release/cnflow
fi
A=cnfmem-a B=cnfmem-b
work=$(mktemp -d)
cleanup() {
  set +e
  for ns in $A $B; do ip netns pids $ns 2>/dev/null | xargs -r kill 2>/dev/null; done
  sleep 0.3; ip netns del $A 2>/dev/null; ip netns del $B 2>/dev/null; rm -rf "$work"
}
trap cleanup EXIT
ip netns del $A 2>/dev/null || true; ip netns del $B 2>/dev/null || true
ip netns add $A; ip netns add $B
ip link add vma netns $A type veth peer name vmb netns $B
ip -n $A addr add 10.200.91.1/24 dev vma; ip -n $B addr add 10.200.91.2/24 dev vmb
for ns in $A $B; do ip -n $ns link set lo up; done
ip -n $A link set vma up; ip -n $B link set vmb up
ulimit -n "$(ulimit -Hn)"  # one fd per connection in client and server
cat > "$work/server.py" <<'PY'
import asyncio
async def handle(r, w):
    try:
        while True:
            line = await r.readline()
            if not line:
                break
            w.write(b"+OK\r\n"); await w.drain()
    except Exception:
        pass
async def main():
    s = await asyncio.start_server(handle, "10.200.91.2", 6379, backlog=4096)
    async with s: await s.serve_forever()
asyncio.run(main())
PY
cat > "$work/client.py" <<'PY'
import asyncio, sys, time
N, DUR = int(sys.argv[1]), float(sys.argv[2])
async def conn(i, ready):
    r, w = await asyncio.open_connection("10.200.91.2", 6379)
    ready.append(1)
    end = time.time() + DUR
    while time.time() < end:
        if i % 2 == 0:
            w.write(b"PING\r\n"); await w.drain(); await r.readline()
        await asyncio.sleep(1)
    w.close()
async def main():
    ready = []
    tasks = []
    for i in range(N):
        tasks.append(asyncio.create_task(conn(i, ready)))
        if i % 500 == 499: await asyncio.sleep(0.05)
    while len(ready) < N: await asyncio.sleep(0.1)
    print(f"{N} connections open", flush=True)
    await asyncio.gather(*tasks, return_exceptions=True)
asyncio.run(main())
PY
ip netns exec $B python3 "$work/server.py" & sleep 1
CNFLOW_INTERFACES=vmb CNFLOW_STATS_INTERVAL_SECS=2 RUST_LOG=info NO_COLOR=1 ip netns exec $B "$bin" run --format none > /dev/null 2> "$work/agent.err" &
sleep 2
agent=$(pgrep -f "$bin run --format none" | head -1)
# RSS in KiB: total, and the part mapped from BPF maps (the ring buffer).
mem() {
  python3 - "$1" <<'PY'
import sys
total = ring = 0
name = ""
for l in open(f"/proc/{sys.argv[1]}/smaps"):
    f = l.split()
    if "-" in f[0] and len(f) >= 5 and not f[0].endswith(":"):
        name = f[5] if len(f) > 5 else ""
    elif f[0] == "Rss:":
        total += int(f[1])
        if "bpf-map" in name:
            ring += int(f[1])
print(total, ring)
PY
}
read -r rss0 ring0 < <(mem "$agent")
ip netns exec $A python3 "$work/client.py" "$n" 25 > "$work/client.out" &
for _ in $(seq 120); do grep -q "open" "$work/client.out" 2>/dev/null && break; sleep 0.5; done
peak=0 peak_ring=0
for _ in $(seq 15); do
  read -r r rr < <(mem "$agent")
  if [ "$r" -gt "$peak" ]; then peak=$r; peak_ring=$rr; fi
  sleep 1
done
flows=$(grep -oE "cnflow.flow.active=[0-9]+" "$work/agent.err" | tail -1 || true)
ring=$(( $("$bin" config | python3 -c 'import json,sys;print(json.load(sys.stdin)["agent"]["ring_buffer_bytes"])') / 1024 ))
own0=$(( (rss0 - ring0) / 1024 )) own=$(( (peak - peak_ring) / 1024 ))
echo "ring buffer: $((ring/1024)) MiB configured (VmRSS counts its double mapping: $((peak_ring/1024)) MiB)"
echo "agent idle: VmRSS $((rss0/1024)) MiB = ring mapping $((ring0/1024)) MiB + $own0 MiB other"
echo "with $n concurrent TCP flows ($((n/2)) active at 1 req/s, $((n/2)) idle; last ${flows:-cnflow.flow.active=?}):"
echo "  peak VmRSS $((peak/1024)) MiB = ring mapping $((peak_ring/1024)) MiB + $own MiB other"
echo "  target: other ≤ 64 MiB (ring size on top): $([ "$own" -le 64 ] && echo met || echo MISSED)"
kill -INT "$agent"; sleep 2
grep -oE "cnflow.flow.created\{transport=tcp\}=[0-9]+|ring_full[=}][0-9]*" "$work/agent.err" | tail -2 || true
