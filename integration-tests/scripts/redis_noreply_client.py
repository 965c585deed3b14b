"""Raw RESP client for the Redis cases of issue #13 item 4, against
redis-server at HOST:6379 (started with enable-debug-command): CLIENT REPLY
SKIP/OFF/ON on a RESP2 connection; on a RESP3 connection HELLO 3, an
attribute reply (DEBUG PROTOCOL attrib), a client-tracking invalidation push
and pub/sub pushes caused by a third connection. After every command it waits
and records what the server sent back: "<conn> <command> -> <first bytes>"
or "-> (nothing)" — the test's oracle. Usage: redis_noreply_client.py HOST"""
import socket
import sys
import time

host = sys.argv[1]


def enc(*parts):
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p.encode()) for p in parts)


def conn():
    s = socket.create_connection((host, 6379))
    s.settimeout(0.3)
    return s


def drain(s):
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            return data
        if not chunk:
            return data
        data += chunk


def cmd(name, s, *parts):
    s.sendall(enc(*parts))
    got = drain(s)
    print(f"{name} {' '.join(parts)} -> {got[:60]!r}" if got else f"{name} {' '.join(parts)} -> (nothing)")
    return got


def pushes(name, s):
    got = drain(s)
    print(f"{name} (push) -> {got[:60]!r}" if got else f"{name} (push) -> (nothing)")


c1, c2, c3 = conn(), conn(), conn()
cmd("c1", c1, "SET", "a", "1")
cmd("c1", c1, "CLIENT", "REPLY", "SKIP")
cmd("c1", c1, "SET", "b", "2")
cmd("c1", c1, "GET", "b")
cmd("c1", c1, "CLIENT", "REPLY", "OFF")
cmd("c1", c1, "SET", "c", "3")
cmd("c1", c1, "INCR", "n")
cmd("c1", c1, "CLIENT", "REPLY", "ON")
cmd("c1", c1, "GET", "c")

cmd("c2", c2, "HELLO", "3")
cmd("c2", c2, "DEBUG", "PROTOCOL", "attrib")
cmd("c2", c2, "CLIENT", "TRACKING", "ON")
cmd("c2", c2, "GET", "a")
cmd("c3", c3, "SET", "a", "2")
pushes("c2", c2)
cmd("c2", c2, "PING")
cmd("c2", c2, "SUBSCRIBE", "ch")
cmd("c3", c3, "PUBLISH", "ch", "hi")
pushes("c2", c2)
cmd("c2", c2, "UNSUBSCRIBE", "ch")
cmd("c2", c2, "PING")
for s in (c1, c2, c3):
    s.close()
time.sleep(0.2)
