# pymemcache (text protocol) session; each step is one request. Connection 1
# up to flush_all, then one connection per error reply. The golden test's expected facts are this list.
import sys
from pymemcache.client.base import Client

c = Client((sys.argv[1], 11211), default_noreply=False)
c.set("foo", b"bar")                         # set -> STORED
c.get("foo")                                 # get hit
c.get("missing")                             # get miss
c.set("baz", b"qux")                         # set -> STORED
c.get_many(["foo", "baz", "missing"])        # get foo baz missing: 2 hits of 3 keys
c.add("foo", b"x")                           # add -> NOT_STORED
c.add("newkey", b"n")                        # add -> STORED
c.replace("foo", b"bar2")                    # replace -> STORED
c.append("foo", b"A")                        # append -> STORED
c.prepend("foo", b"P")                       # prepend -> STORED
_, token = c.gets("foo")                     # gets hit
c.cas("foo", b"v3", token)                   # cas -> STORED
c.cas("foo", b"v4", token)                   # cas (stale) -> EXISTS
c.delete("foo")                              # delete -> DELETED
c.delete("foo")                              # delete -> NOT_FOUND
c.set("counter", b"10")                      # set -> STORED
c.incr("counter", 5)                         # incr -> 15
c.decr("counter", 3)                         # decr -> 12
c.incr("nocounter", 1)                       # incr -> NOT_FOUND
c.touch("counter", 100)                      # touch -> TOUCHED
c.raw_command(b"gat 0 counter", b"END\r\n")  # gat hit
c.raw_command(b"gats 0 counter baz", b"END\r\n")  # gats: 2 hits
c.set("nr", b"v", noreply=True)              # set noreply: no response
c.get("nr")                                  # get hit (pairs after the noreply set)
c.set("big", b"v" * 3000)                    # set of a value larger than the snap length
c.get("big")                                 # get hit
c.version()                                  # version
c.stats()                                    # stats
c.raw_command(b"verbosity 1", b"\r\n")      # verbosity -> OK
c.flush_all()                                # flush_all -> OK
# Error replies: pymemcache raises and drops the connection after each, so
# these two are the last request of their connection.
for bad in (b"bogus_command", b"incr counter abc"):  # -> ERROR; -> CLIENT_ERROR invalid numeric delta argument
    try:
        c.raw_command(bad, b"\r\n")
    except Exception as e:
        print(type(e).__name__, e)
c.close()
