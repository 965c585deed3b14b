#!/usr/bin/env python3
"""A pymongo client doing a fixed list of operations against HOST:PORT.
Usage: client.py HOST PORT COMPRESSORS FACTS_OUT [PAUSE_S]
COMPRESSORS: "none" or a pymongo compressors string ("zlib", "snappy", "zstd").
FACTS_OUT gets pymongo's own record of every command it ran (command
monitoring: request id, command, database, collection, rows it got back,
error code): the oracle for the golden tests. PAUSE_S: sleep that long in the
middle of the session (for captures that join mid-connection).
"""
import json
import socket
import struct
import sys
import time

import bson

import pymongo
from pymongo import monitoring
from pymongo.cursor import CursorType
from pymongo.errors import DuplicateKeyError, OperationFailure

host, port, comp, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
pause = float(sys.argv[5]) if len(sys.argv) > 5 else 0
facts = []
started = {}


class Listener(monitoring.CommandListener):
    def started(self, e):
        cmd = e.command
        coll = cmd.get("collection") if e.command_name == "getMore" else cmd.get(e.command_name)
        started[e.request_id] = {"request_id": e.request_id, "command": e.command_name, "db": e.database_name,
                                 "collection": coll if isinstance(coll, str) else None}

    def succeeded(self, e):
        f = dict(started.pop(e.request_id, {"request_id": e.request_id, "command": e.command_name}))
        r = e.reply
        cur = r.get("cursor") or {}
        batch = cur.get("firstBatch", cur.get("nextBatch"))
        f["rows"] = len(batch) if batch is not None else r.get("n")
        we = r.get("writeErrors")
        # pymongo reports some errors as success (drop of a missing collection): the reply says.
        f["code"] = we[0]["code"] if we else (r.get("code") if r.get("ok") != 1 else None)
        facts.append(f)

    def failed(self, e):
        f = dict(started.pop(e.request_id, {"request_id": e.request_id, "command": e.command_name}))
        f["rows"] = None
        f["code"] = (e.failure or {}).get("code")
        facts.append(f)




def legacy_hello():
    """What drivers before OP_MSG (and pymongo before 4.?) opened with: OP_QUERY
    isMaster on admin.$cmd, answered by OP_REPLY. Encoded by pymongo's bson."""
    s = socket.create_connection((host, port))
    q = bson.encode({"isMaster": 1, "client": {"driver": {"name": "legacy", "version": "0"}}})
    body = struct.pack("<i", 0) + b"admin.$cmd\x00" + struct.pack("<ii", 0, -1) + q
    s.sendall(struct.pack("<iiii", 16 + len(body), 4242, 0, 2004) + body)
    length = struct.unpack("<i", s.recv(4, socket.MSG_WAITALL))[0]
    rest = s.recv(length - 4, socket.MSG_WAITALL)
    reply = bson.decode(rest[32:])
    s.close()
    facts.append({"request_id": 4242, "command": "isMaster", "db": "admin", "collection": None, "rows": None,
                  "code": None, "legacy": True, "ok": reply["ok"]})


legacy_hello()
kw = {} if comp == "none" else {"compressors": comp}
if comp != "none":
    # pymongo drops a compressor whose module is missing (zstd needs backports.zstd before Python 3.14).
    from pymongo.compression_support import validate_compressors

    if validate_compressors(None, comp) != [comp]:
        sys.exit(f"compressor {comp} is not available to pymongo")
client = pymongo.MongoClient(host, port, directConnection=True, event_listeners=[Listener()], heartbeatFrequencyMS=60000,
                             serverSelectionTimeoutMS=5000, retryWrites=False, retryReads=False, **kw)
db = client.shop
orders = db.orders
orders.insert_one({"_id": 1, "item": "pen", "status": "paid", "total": 5})
orders.insert_many([{"_id": i, "item": f"item{i}", "status": "paid" if i % 2 else "new", "total": 10 * i} for i in range(2, 8)])
try:
    orders.insert_one({"_id": 3, "item": "dup"})
except DuplicateKeyError as e:
    print("duplicate", e.code)
print("paid", len(list(orders.find({"status": "paid"}))))
print("batched", len(list(orders.find({}, batch_size=2))))
c = orders.find({"total": {"$gt": 10}}, batch_size=2)
next(c)
c.close()  # killCursors
print("updated", orders.update_many({"status": "new"}, {"$set": {"status": "paid"}}).modified_count)
print("updated_one", orders.update_one({"_id": 1}, {"$set": {"total": 6}}).matched_count)
if pause:
    time.sleep(pause)
print("agg", list(orders.aggregate([{"$match": {"total": {"$gte": 20}}}, {"$count": "n"}])))
print("count", orders.count_documents({"status": "paid"}))
print("exhaust", len(list(orders.find({}, batch_size=2, cursor_type=CursorType.EXHAUST))))
print("deleted", orders.delete_one({"_id": 7}).deleted_count)
print("deleted_many", orders.delete_many({"total": {"$lt": 30}}).deleted_count)
try:
    db.command("nosuchcommand")
except OperationFailure as e:
    print("error", e.code)
db.drop_collection("never_created")  # pymongo ignores the NamespaceNotFound it gets
orders.drop()
client.admin.command("ping")
client.close()  # endSessions
json.dump(facts, open(out, "w"), indent=1)
print("commands", len(facts))
