#!/usr/bin/env python3
"""A small scripted MongoDB server: enough of the wire protocol (legacy
OP_QUERY/OP_REPLY handshake, OP_MSG, OP_COMPRESSED with snappy/zlib/zstd)
and of the commands pymongo uses (hello, insert, find, getMore with exhaust,
update, delete, aggregate with $match/$group/$count, killCursors,
endSessions, drop, ping) for pymongo to work against it. Documents are
encoded by pymongo's own `bson`. No MongoDB server is packaged in Debian.

Usage: server.py HOST PORT [PORT...] [--log FILE]
The log gets one JSON line per message received: what the server saw
(opcode, compressor, command, database), an oracle independent of cnflow.
"""
import datetime
import json
import socket
import struct
import sys
import threading
import zlib

import bson

try:
    import snappy
except ImportError:  # pragma: no cover
    snappy = None
try:
    import zstandard
except ImportError:  # pragma: no cover
    zstandard = None

OP_REPLY, OP_QUERY, OP_COMPRESSED, OP_MSG = 1, 2004, 2012, 2013
MORE_TO_COME, EXHAUST_ALLOWED = 1 << 1, 1 << 16
COMPRESSORS = {"snappy": 1, "zlib": 2, "zstd": 3}
SUPPORTED = [c for c in ("snappy", "zstd", "zlib") if c == "zlib" or (c == "snappy" and snappy) or (c == "zstd" and zstandard)]

lock = threading.Lock()
collections = {}  # (db, coll) -> list of documents
cursors = {}  # id -> (db, coll, remaining documents)
next_cursor = [1000]
next_request = [1]
conn_ids = [0]
log_file = None


def log(entry):
    if log_file:
        with lock:
            log_file.write(json.dumps(entry) + "\n")
            log_file.flush()


def compress(cid, data):
    if cid == 1:
        return snappy.compress(data)
    if cid == 2:
        return zlib.compress(data)
    if cid == 3:
        return zstandard.ZstdCompressor().compress(data)
    return data


def decompress(cid, data):
    if cid == 1:
        return snappy.uncompress(data)
    if cid == 2:
        return zlib.decompress(data)
    if cid == 3:
        return zstandard.ZstdDecompressor().decompress(data)
    return data


def matches(doc, flt):
    for k, v in (flt or {}).items():
        if isinstance(v, dict) and v and all(x.startswith("$") for x in v):
            for op, arg in v.items():
                x = doc.get(k)
                ok = {"$gt": lambda: x is not None and x > arg, "$gte": lambda: x is not None and x >= arg,
                      "$lt": lambda: x is not None and x < arg, "$lte": lambda: x is not None and x <= arg,
                      "$ne": lambda: x != arg, "$in": lambda: x in arg}.get(op, lambda: False)()
                if not ok:
                    return False
        elif doc.get(k) != v:
            return False
    return True


def error(code, name, msg):
    return {"ok": 0.0, "errmsg": msg, "code": code, "codeName": name}


def make_cursor(db, coll, docs, batch, first=True, cid=None):
    """A cursor reply; the cursor (kept id) holds what is past the batch. Called with `lock` held."""
    key = "firstBatch" if first else "nextBatch"
    if batch and len(docs) > batch:
        if cid is None:
            cid = next_cursor[0]
            next_cursor[0] += 1
        cursors[cid] = (db, coll, docs[batch:])
        return {"cursor": {key: docs[:batch], "id": bson.int64.Int64(cid), "ns": f"{db}.{coll}"}, "ok": 1.0}
    return {"cursor": {key: docs, "id": bson.int64.Int64(0), "ns": f"{db}.{coll}"}, "ok": 1.0}


def hello(cmd, conn_id):
    offered = cmd.get("compression", [])
    return {
        "helloOk": True, "ismaster": True, "isWritablePrimary": True,
        "maxBsonObjectSize": 16 * 1024 * 1024, "maxMessageSizeBytes": 48000000, "maxWriteBatchSize": 100000,
        "localTime": datetime.datetime.now(datetime.timezone.utc), "logicalSessionTimeoutMinutes": 30,
        "connectionId": conn_id, "minWireVersion": 0, "maxWireVersion": 17, "readOnly": False,
        "compression": [c for c in offered if c in SUPPORTED], "ok": 1.0,
    }


def run(cmd, seqs, conn_id):
    name = next(iter(cmd))
    db = cmd.get("$db", "admin")
    lname = name.lower()
    if lname in ("hello", "ismaster"):
        return hello(cmd, conn_id)
    if lname in ("ping", "endsessions", "buildinfo"):
        return {"ok": 1.0, "version": "7.0.0"} if lname == "buildinfo" else {"ok": 1.0}
    coll = cmd.get(name)
    key = (db, coll)
    with lock:
        docs = collections.setdefault(key, []) if isinstance(coll, str) else []
        if name == "insert":
            n, errs = 0, []
            for i, d in enumerate(seqs.get("documents", cmd.get("documents", []))):
                if any(x.get("_id") == d.get("_id") for x in docs):
                    errs.append({"index": i, "code": 11000, "errmsg": f"E11000 duplicate key error collection: {db}.{coll} index: _id_ dup key: {{ _id: {d.get('_id')} }}"})
                    if cmd.get("ordered", True):
                        break
                else:
                    docs.append(d)
                    n += 1
            r = {"n": n, "ok": 1.0}
            if errs:
                r["writeErrors"] = errs
            return r
        if name == "find":
            found = [d for d in docs if matches(d, cmd.get("filter"))]
            if "limit" in cmd and cmd["limit"]:
                found = found[: abs(cmd["limit"])]
            return make_cursor(db, coll, found, cmd.get("batchSize"))
        if name == "update":
            n = m = 0
            for u in seqs.get("updates", cmd.get("updates", [])):
                for d in [d for d in docs if matches(d, u["q"])][: None if u.get("multi") else 1]:
                    n += 1
                    for k, v in u["u"].get("$set", {}).items():
                        if d.get(k) != v:
                            d[k] = v
                            m += 1
                    for k, v in u["u"].get("$inc", {}).items():
                        d[k] = d.get(k, 0) + v
                        m += 1
            return {"n": n, "nModified": m, "ok": 1.0}
        if name == "delete":
            n = 0
            for q in seqs.get("deletes", cmd.get("deletes", [])):
                hit = [d for d in docs if matches(d, q["q"])][: 1 if q.get("limit") else None]
                for d in hit:
                    docs.remove(d)
                n += len(hit)
            return {"n": n, "ok": 1.0}
        if name == "aggregate":
            out = list(docs)
            for stage in cmd.get("pipeline", []):
                (op, arg), = stage.items()
                if op == "$match":
                    out = [d for d in out if matches(d, arg)]
                elif op == "$group":
                    out = [{"_id": arg.get("_id"), "n": len(out)}] if out else []
                elif op == "$count":
                    out = [{arg: len(out)}] if out else []
                elif op == "$limit":
                    out = out[:arg]
                elif op == "$skip":
                    out = out[arg:]
                else:
                    return error(40324, "Location40324", f"Unrecognized pipeline stage name: '{op}'")
            return make_cursor(db, coll, out, cmd.get("cursor", {}).get("batchSize"))
        if name == "getMore":
            c = cursors.pop(int(coll), None)
            if c is None:
                return error(43, "CursorNotFound", f"cursor id {coll} not found")
            cdb, ccoll, rest = c
            return make_cursor(cdb, ccoll, rest, cmd.get("batchSize"), first=False, cid=int(coll))
        if name == "killCursors":
            killed = [c for c in cmd.get("cursors", []) if cursors.pop(int(c), None) is not None]
            return {"cursorsKilled": killed, "cursorsNotFound": [], "cursorsAlive": [], "cursorsUnknown": [], "ok": 1.0}
        if name == "drop":
            if key not in collections or not collections[key]:
                collections.pop(key, None)
                return error(26, "NamespaceNotFound", "ns not found")
            del collections[key]
            return {"nIndexesWas": 1, "ns": f"{db}.{coll}", "ok": 1.0}
    return error(59, "CommandNotFound", f"no such command: '{name}'")


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError
        b += c
    return b


def new_id():
    with lock:
        next_request[0] += 1
        return next_request[0]


def send(s, response_to, op, body, cid, request_id=None):
    rid = request_id or new_id()
    if cid is not None:
        body = struct.pack("<iiB", op, len(body), cid) + compress(cid, body)
        op = OP_COMPRESSED
    s.sendall(struct.pack("<iiii", 16 + len(body), rid, response_to, op) + body)
    return rid


def op_msg_body(doc, flags=0):
    return struct.pack("<I", flags) + b"\x00" + bson.encode(doc)


def serve(s, port):
    with lock:
        conn_ids[0] += 1
        conn_id = conn_ids[0]
    try:
        while True:
            length, rid, _, op = struct.unpack("<iiii", recv_exact(s, 16))
            body = recv_exact(s, length - 16)
            cid = None
            if op == OP_COMPRESSED:
                op, _size, cid = struct.unpack("<iiB", body[:9])
                body = decompress(cid, body[9:])
            if op == OP_QUERY:
                ns_end = body.index(b"\x00", 4)
                ns = body[4:ns_end].decode()
                q = bson.decode(body[ns_end + 9:])
                cmd = q.get("$query", q)
                log({"port": port, "op": "OP_QUERY", "compressor": None, "command": next(iter(cmd)), "db": ns.split(".")[0]})
                r = hello(cmd, conn_id) if next(iter(cmd)).lower() in ("hello", "ismaster") else run(cmd, {}, conn_id)
                reply = struct.pack("<iqii", 8, 0, 0, 1) + bson.encode(r)
                send(s, rid, OP_REPLY, reply, cid)
                continue
            if op != OP_MSG:
                raise ValueError(f"unsupported opcode {op}")
            flags = struct.unpack("<I", body[:4])[0]
            i, cmd, seqs = 4, None, {}
            while i < len(body):
                kind = body[i]
                if kind == 0:
                    n = struct.unpack("<i", body[i + 1:i + 5])[0]
                    cmd = bson.decode(body[i + 1:i + 1 + n])
                    i += 1 + n
                else:
                    n = struct.unpack("<i", body[i + 1:i + 5])[0]
                    sec = body[i + 5:i + 1 + n]
                    ident, rest = sec.split(b"\x00", 1)
                    seqs[ident.decode()] = bson.decode_all(rest)
                    i += 1 + n
            name = next(iter(cmd))
            log({"port": port, "op": "OP_MSG", "compressor": {v: k for k, v in COMPRESSORS.items()}.get(cid, "noop" if cid == 0 else None),
                 "command": name, "db": cmd.get("$db"), "flags": flags})
            r = run(cmd, seqs, conn_id)
            if flags & MORE_TO_COME:
                continue
            if name == "getMore" and flags & EXHAUST_ALLOWED:
                # Exhaust: stream every remaining batch, each answering the previous reply.
                to = rid
                while r.get("ok") == 1.0 and r["cursor"]["id"] != 0:
                    to = send(s, to, OP_MSG, op_msg_body(r, MORE_TO_COME), cid)
                    r = run(cmd, seqs, conn_id)
                send(s, to, OP_MSG, op_msg_body(r), cid)
                continue
            send(s, rid, OP_MSG, op_msg_body(r), cid)
    except (EOFError, ConnectionResetError, BrokenPipeError):
        pass
    finally:
        s.close()


def listen(host, port):
    ls = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, port))
    ls.listen(64)
    while True:
        c, _ = ls.accept()
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve, args=(c, port), daemon=True).start()


def main():
    args = sys.argv[1:]
    global log_file
    if "--log" in args:
        i = args.index("--log")
        log_file = open(args[i + 1], "a")
        del args[i:i + 2]
    host, ports = args[0], [int(p) for p in args[1:]]
    for p in ports[1:]:
        threading.Thread(target=listen, args=(host, p), daemon=True).start()
    print("listening", host, ports, "compressors", SUPPORTED, flush=True)
    listen(host, ports[0])


if __name__ == "__main__":
    main()
