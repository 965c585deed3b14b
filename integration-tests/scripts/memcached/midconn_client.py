# One connection: three exchanges, a pause (the late capture starts then),
# then five more. The mid-connection capture sees only the second part.
import sys, time
from pymemcache.client.base import Client

c = Client((sys.argv[1], 11211), default_noreply=False)
c.set("a", b"1")
c.get("a")
c.get("b")
time.sleep(4)
c.set("b", b"22")                            # set -> STORED
c.get_many(["a", "b", "c"])                  # 2 hits of 3
c.delete("a")                                # DELETED
c.incr("b", 1)                               # 23
c.get("a")                                   # miss
c.close()
