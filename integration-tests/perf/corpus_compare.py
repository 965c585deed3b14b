#!/usr/bin/env python3
"""Compare the exchanges `cnflow replay --format exchanges` finds in capture files with
the requests tshark finds in the same files (see corpus_compare.sh).

Usage: corpus_compare.py CNFLOW_BIN [--samples N] [--json OUT] DIR_OR_FILE...

Per protocol it prints how many requests tshark finds, how many of them cnflow has an
exchange for on the same connection with the same key (HTTP: method + path, DNS: id +
question name, Redis: command, Kafka: api key + correlation id, MongoDB: request id,
memcached: command, MQTT: packet type, ICMP: echo id + sequence, others: count per
connection), and the cnflow exchanges on connections where tshark dissects another
application protocol and never this one (wrong-protocol candidates; to be looked at,
tshark relies on ports and can be the one that is wrong).

Connections are matched on transport + both endpoints, so a request counts only if
cnflow put it on the same flow; several requests with one key on one connection are
matched as a multiset.
"""
import collections
import ipaddress
import json
import os
import re
import subprocess
import sys

# cnflow protocol -> tshark protocol names (frame.protocols) that confirm it.
CONFIRM = {
    "http1": {"http"},
    "http2": {"http2"},
    "grpc": {"http2", "grpc"},
    "dns": {"dns", "mdns", "llmnr"},
    "redis": {"resp"},
    "kafka": {"kafka"},
    "postgres": {"pgsql"},
    "mysql": {"mysql"},
    "mongodb": {"mongo"},
    "amqp": {"amqp"},
    "mqtt": {"mqtt"},
    "memcached": {"memcache"},
    "nats": set(),  # tshark 4.0 has no NATS dissector: never checked
    "icmp": {"icmp", "icmpv6"},
}
# frame.protocols entries that are not an application protocol.
LOWER = {
    "eth", "ethertype", "ip", "ipv6", "tcp", "udp", "data", "sll", "null", "loop", "raw",
    "vlan", "frame", "pkt_comment", "ipv6.hopopts", "ipv6.routing", "ipv6.fraghdr",
    "ppp", "pppoes", "pppoed", "gre", "vxlan", "geneve", "mpls", "nflog", "erf", "tcp.segments",
    "llc", "snap", "wlan", "radiotap", "wlan_radio", "ip.options", "ipip", "linux_cooked",
    "_ws.malformed", "_ws.short", "_ws.expert", "_ws.unreassembled",
    "sll2", "ppi", "cflow", "fake-field-wrapper", "media", "image-gif", "image-jfif",
    "png", "json", "xml", "urlencoded-form", "text", "mime_multipart", "data-text-lines",
}
ABSOLUTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
ENCRYPTED = {"tls", "ssl", "dtls", "quic"}
MQTT_REQ = {1: "CONNECT", 3: "PUBLISH", 8: "SUBSCRIBE", 10: "UNSUBSCRIBE", 12: "PINGREQ", 14: "DISCONNECT"}
FIELDS = [
    "frame.number", "frame.protocols", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst",
    "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport", "tcp.flags.syn", "tcp.flags.ack",
    "http.request.method", "http.request.uri",
    "dns.flags.response", "dns.id", "dns.qry.name",
    "resp.array.length", "resp.bulk_string.value",
    "http2.headers.method", "http2.headers.path",
    "kafka.request_key", "kafka.correlation_id",
    "mongo.request_id", "mongo.response_to",
    "memcache.command", "mqtt.msgtype", "mysql.command", "pgsql.type", "amqp.method.class",
    "icmp.type", "icmp.ident", "icmp.seq", "icmpv6.type", "icmpv6.echo.identifier",
    "icmpv6.echo.sequence_number",
]
AGG = "\x1e"


def ip_norm(s):
    try:
        return str(ipaddress.ip_address(s.strip("[]")))
    except ValueError:
        return s


def conv_key(transport, a, b):
    return (transport, frozenset((a, b)))


def endpoint(s):
    host, _, port = s.rpartition(":")
    return (ip_norm(host), int(port) if port.isdigit() else 0)


def path_of(uri):
    if uri is None:
        return None
    if ABSOLUTE.match(uri):  # absolute form (proxies): compare the path part
        rest = uri.split("://", 1)[1]
        uri = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    return uri.split("?", 1)[0]


def split(v):
    return [x for x in v.split(AGG)] if v else []


def last(v):
    xs = split(v)
    return xs[-1] if xs else ""


def unescape(name):
    """cnflow writes non-printable name bytes as \\ooo (octal);
    tshark prints the bytes as UTF-8."""
    if "\\" not in name:
        return name
    out, i, raw = bytearray(), 0, name.encode("utf-8")
    while i < len(raw):
        if raw[i] == 0x5C and i + 3 < len(raw) and raw[i + 1:i + 4].isdigit():
            out.append(int(raw[i + 1:i + 4], 8) & 0xFF)
            i += 4
        elif raw[i] == 0x5C and i + 1 < len(raw):
            out.append(raw[i + 1])
            i += 2
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "replace")


def cnflow_exchanges(binary, path):
    r = subprocess.run([binary, "replay", path, "--format", "exchanges"], capture_output=True,
                       timeout=300)
    out = []
    for line in r.stdout.decode("utf-8", "replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out, r.returncode, r.stderr.decode("utf-8", "replace")[-300:]


def cnflow_key(e):
    d, p = e.get("detail") or {}, e["protocol"]
    if p in ("http1", "http2", "grpc"):
        return (p if p != "grpc" else "http2", (d.get("method"), path_of(d.get("path"))))
    if p == "dns":
        return ("dns", (d.get("id"), unescape(d.get("question_name") or "").lower().rstrip(".")))
    if p == "redis":
        return ("redis", (d.get("command") or d.get("operation") or "").upper())
    if p == "kafka":
        return ("kafka", (d.get("api_key"), d.get("correlation_id")))
    if p == "mongodb":
        return ("mongodb", d.get("request_id"))
    if p == "memcached":
        return ("memcached", (d.get("command") or "").lower())
    if p == "mqtt":
        return ("mqtt", d.get("packet"))
    if p == "icmp":
        return ("icmp", (d.get("echo_id"), d.get("echo_seq")))
    return (p, None)


def tshark_requests(path):
    """(conv, protocol, key, frame) of every request tshark dissects, and per conv the
    application protocols tshark saw."""
    cmd = ["tshark", "-r", path, "-n", "-T", "fields", "-E", "occurrence=a", "-E",
           "aggregator=" + AGG, "-E", "separator=\t"]
    for f in FIELDS:
        cmd += ["-e", f]
    r = subprocess.run(cmd, capture_output=True, timeout=600)
    reqs, protos, servers = [], collections.defaultdict(collections.Counter), {}
    for line in r.stdout.decode("utf-8", "replace").splitlines():
        v = dict(zip(FIELDS, line.split("\t") + [""] * len(FIELDS)))
        if not v["frame.number"].isdigit():
            continue  # a field value with a tab or newline broke the line
        # Innermost IP header (tunnels: cnflow decodes the inner flow).
        layers = [p for p in v["frame.protocols"].split(":") if p in ("ip", "ipv6")]
        fam = ["ip", "ipv6"] if layers and layers[-1] == "ip" else ["ipv6", "ip"]
        src = last(v.get(fam[0] + ".src")) or last(v.get(fam[1] + ".src"))
        dst = last(v.get(fam[0] + ".dst")) or last(v.get(fam[1] + ".dst"))
        if not src or not dst:
            continue
        src, dst = ip_norm(src), ip_norm(dst)
        if v.get("tcp.srcport"):
            tr, sp, dp = "tcp", last(v["tcp.srcport"]), last(v["tcp.dstport"])
        elif v.get("udp.srcport"):
            tr, sp, dp = "udp", last(v["udp.srcport"]), last(v["udp.dstport"])
        else:
            tr, sp, dp = "icmp", "0", "0"
        if not (sp or "0").isdigit() or not (dp or "0").isdigit():
            continue
        a, b = (src, int(sp or 0)), (dst, int(dp or 0))
        c = conv_key(tr, a, b) if tr != "icmp" else ("icmp", frozenset((src, dst)))
        if tr == "tcp" and v.get("tcp.flags.syn") in ("1", "True") and v.get("tcp.flags.ack") in ("0", "False"):
            servers[c] = b
        fr = v["frame.number"]
        try:
            parse_frame(v, c, tr, b, dp, fr, reqs, protos, servers)
        except (ValueError, KeyError, IndexError):
            reqs.append((c, "(tshark fields not parsed, left out)", None, fr))
    return reqs, protos, r.returncode


def parse_frame(v, c, tr, b, dp, fr, reqs, protos, servers):
    frame_protos = v["frame.protocols"].split(":")
    if set(frame_protos) & ENCRYPTED:
        # tshark decrypts TLS/QUIC with keys stored in the file (pcapng DSB) or its
        # preferences; a capture gives cnflow only ciphertext (it reads plaintext
        # through uprobes live): such requests are left out of the comparison.
        reqs.append((c, "(inside TLS/QUIC, left out)", None, fr))
        for p in frame_protos:
            if p not in LOWER:
                protos[c][p] += 1
        return
    for p in frame_protos:
        if p not in LOWER:
            protos[c][p] += 1
    for m, u in zip(split(v.get("http.request.method")), split(v.get("http.request.uri")) + [None] * 64):
        # HTTP over UDP (SSDP M-SEARCH/NOTIFY): cnflow decodes HTTP/1 on TCP only.
        reqs.append((c, "http1" if tr == "tcp" else "(HTTP over UDP, left out)", (m, path_of(u)), fr))
    resp_flags = split(v.get("dns.flags.response"))
    ids, names = split(v.get("dns.id")), split(v.get("dns.qry.name"))
    for i, (fl, did) in enumerate(zip(resp_flags, ids)):
        if fl in ("0", "False"):
            name = names[i] if len(names) == len(ids) else None
            if name is not None:
                # tshark writes the root as <root> and other bytes as \ooo like cnflow.
                name = "" if name == "<root>" else unescape(name).lower().rstrip(".")
            reqs.append((c, "dns", (int(did, 0), name), fr))
    if v.get("resp.array.length") and (servers.get(c) == b or (c not in servers and int(dp or 0) == 6379)):
        lens, vals, k = split(v["resp.array.length"]), split(v.get("resp.bulk_string.value")), 0
        for n in lens:  # top-level arrays of bulk strings: the first is the command
            cmd_hex = vals[k] if k < len(vals) else ""
            try:
                name = bytes.fromhex(cmd_hex.replace(":", "")).decode("latin-1").upper()
            except ValueError:
                name = ""
            reqs.append((c, "redis", name, fr))
            k += max(int(n), 0)
    for m, p in zip(split(v.get("http2.headers.method")), split(v.get("http2.headers.path")) + [None] * 64):
        reqs.append((c, "http2", (m, path_of(p)), fr))
    for key, cid in zip(split(v.get("kafka.request_key")), split(v.get("kafka.correlation_id"))):
        reqs.append((c, "kafka", (int(key), int(cid)), fr))
    for rid, to in zip(split(v.get("mongo.request_id")), split(v.get("mongo.response_to"))):
        if to == "0":
            reqs.append((c, "mongodb", int(rid), fr))
    # tshark also fills memcache.command with the server's STAT/VALUE lines.
    if servers.get(c) == b or (c not in servers and int(dp or 0) == 11211):
        for m in split(v.get("memcache.command")):
            reqs.append((c, "memcached", m.lower(), fr))
    for t in split(v.get("mqtt.msgtype")):
        if int(t) in MQTT_REQ:
            reqs.append((c, "mqtt", MQTT_REQ[int(t)], fr))
    for _ in split(v.get("mysql.command")):
        reqs.append((c, "mysql", None, fr))
    for t in split(v.get("pgsql.type")):
        if t in ("Simple query", "Parse"):
            reqs.append((c, "postgres", None, fr))
    if v.get("amqp.method.class") and servers.get(c) == b:
        for _ in split(v["amqp.method.class"]):
            reqs.append((c, "amqp", None, fr))
    if v.get("icmp.type") == "8":
        reqs.append((c, "icmp", (int(v["icmp.ident"].split(AGG)[0], 0), int(v["icmp.seq"].split(AGG)[0], 0)), fr))
    if v.get("icmpv6.type") == "128":
        reqs.append((c, "icmp", (int(last(v["icmpv6.echo.identifier"]), 0), int(last(v["icmpv6.echo.sequence_number"]), 0)), fr))


def main():
    args = sys.argv[1:]
    binary, samples, json_out = args.pop(0), 5, None
    paths = []
    while args:
        a = args.pop(0)
        if a == "--samples":
            samples = int(args.pop(0))
        elif a == "--json":
            json_out = args.pop(0)
        elif os.path.isdir(a):
            paths += sorted(os.path.join(a, f) for f in os.listdir(a)
                            if f.endswith((".pcap", ".pcapng", ".cap")))
        else:
            paths.append(a)
    tot = collections.defaultdict(lambda: collections.Counter())
    misses = collections.defaultdict(list)
    wrong, unverified, failed = [], collections.Counter(), []
    for path in paths:
        try:
            exs, rc, err = cnflow_exchanges(binary, path)
            reqs, protos, trc = tshark_requests(path)
        except subprocess.TimeoutExpired:
            failed.append((path, "timeout"))
            continue
        if rc != 0:
            failed.append((path, f"cnflow exit {rc}: {err.strip().splitlines()[-1] if err.strip() else ''}"))
        have = collections.defaultdict(collections.Counter)  # (conv, proto) -> Counter(key)
        for e in exs:
            c = e["conn"]
            tr = c["transport"]
            if tr == "icmp":
                conv = ("icmp", frozenset((endpoint(c["client"])[0], endpoint(c["server"])[0])))
            else:
                conv = conv_key(tr, endpoint(c["client"]), endpoint(c["server"]))
            proto, key = cnflow_key(e)
            have[(conv, proto)][key] += 1
            tot[e["protocol"]]["cnflow_exchanges"] += 1
            seen = protos.get(conv, {})
            conf = CONFIRM.get(e["protocol"], set())
            if not conf:
                continue
            if seen and not (set(seen) & conf):
                other = ",".join(p for p, _ in seen.most_common(3))
                wrong.append((os.path.basename(path), e["protocol"], c["client"], c["server"], other, str(key)))
            elif not seen:
                unverified[e["protocol"]] += 1
        for conv, proto, key, fr in reqs:
            t = tot[proto]
            if proto.startswith("("):
                t["tshark"] += 1
                continue
            t["tshark"] += 1
            hk = have.get((conv, proto))
            if hk is None:
                t["missed_no_exchange_on_conn"] += 1
                misses[proto].append((os.path.basename(path), fr, "no exchange on connection", key))
                continue
            if key is None or proto in ("dns",) and key[1] is None:
                # count-level: take any exchange of the connection
                k = next((k for k, n in hk.items() if n > 0), None)
            else:
                k = key if hk.get(key, 0) > 0 else None
                if k is None and proto == "dns" and key[1] and "\ufffd" in key[1]:
                    # a binary name (DNS tunnels) tshark printed as invalid UTF-8: id only
                    k = next((x for x, n in hk.items() if n > 0 and x[0] == key[0]), None)
                if k is None and proto in ("http1", "http2") and key[1]:
                    # tshark ends the URI at the first space, cnflow at " HTTP/"
                    k = next((x for x, n in hk.items() if n > 0 and x[0] == key[0] and x[1]
                              and x[1].startswith(key[1])), None)
            if k is not None:
                hk[k] -= 1
                t["matched"] += 1
            else:
                t["missed_key"] += 1
                misses[proto].append((os.path.basename(path), fr, "other key on connection", key,
                                      sorted((str(k) for k, n in hk.items() if n > 0))[:3]))
    print(f"{len(paths)} files, {len(failed)} failed")
    for f in failed:
        print("  failed:", *f)
    print(f"{'protocol':10s} {'tshark':>7s} {'matched':>8s} {'match%':>7s} {'no-conn':>8s} {'key':>5s} {'cnflow':>7s}")
    summary = {}
    for p in sorted(tot, key=lambda p: -tot[p]["tshark"]):
        t = tot[p]
        pct = 100.0 * t["matched"] / t["tshark"] if t["tshark"] else float("nan")
        summary[p] = dict(t)
        print(f"{p:10s} {t['tshark']:7d} {t['matched']:8d} {pct:7.1f} {t['missed_no_exchange_on_conn']:8d} "
              f"{t['missed_key']:5d} {t['cnflow_exchanges']:7d}")
    hdr = [p for p in ("http1", "dns", "redis") if tot[p]["tshark"]]
    ts, m = sum(tot[p]["tshark"] for p in hdr), sum(tot[p]["matched"] for p in hdr)
    if ts:
        print(f"HTTP/1+DNS+Redis: {m}/{ts} = {100.0 * m / ts:.1f}%")
    ts = sum(t["tshark"] for p, t in tot.items() if not p.startswith("("))
    m = sum(t["matched"] for t in tot.values())
    if ts:
        print(f"all protocols: {m}/{ts} = {100.0 * m / ts:.1f}%")
    print(f"wrong-protocol candidates (cnflow label, tshark sees only other protocols): {len(wrong)}")
    by = collections.Counter((w[1], w[4]) for w in wrong)
    for (cp, tp), n in by.most_common():
        print(f"   cnflow {cp} / tshark {tp}: {n}, e.g.", *next(w for w in wrong if (w[1], w[4]) == (cp, tp)))
    print("cnflow exchanges on connections where tshark sees no application protocol (unverified):",
          dict(unverified))
    for p, ms in misses.items():
        print(f"misses {p}: {len(ms)} (first {samples})")
        for x in ms[:samples]:
            print("  ", *x)
    if json_out:
        with open(json_out, "w") as f:
            json.dump({"summary": summary, "wrong": wrong, "misses": {p: [list(map(str, x)) for x in ms] for p, ms in misses.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
