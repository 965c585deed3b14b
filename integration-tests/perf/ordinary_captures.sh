#!/usr/bin/env bash
# Prints the committed real-peer captures of ordinary sessions, one path per line:
# Ethernet (link type 1, what tcpdump -i <veth> writes; one link type per merged
# file for replicate_pcap.py), without the cut, lossy, mid-connection, snap-length,
# duplicated, reordered, nanosecond, raw-IP and tunnel ones (tunnel copies would
# rewrite only the outer addresses, so inner flows would collide).
# Used by bench_replay.sh and pgo.sh. Run from the repository root.
set -euo pipefail
for f in integration-tests/pcaps/*.pcap; do
  case "$(basename "$f")" in *trunc*|*lost*|*mid*|*snap*|*_dup*|*reordered*|*nsec*|*rawip*|tunnel_*) continue;; esac
  lt=$(python3 -c 'import struct,sys;d=open(sys.argv[1],"rb").read(24);e="<" if d[:4] in (b"\xd4\xc3\xb2\xa1",b"\x4d\x3c\xb2\xa1") else ">";print(struct.unpack(e+"I",d[20:24])[0])' "$f")
  [ "$lt" = 1 ] && echo "$f"
done
exit 0
