# python-binary-memcached (binary protocol) session on one connection.
import sys
import bmemcached

c = bmemcached.Client([sys.argv[1] + ":11211"])
c.set("foo", "bar")                  # set -> success
c.get("foo")                         # get hit
c.get("missing")                     # get -> Key not found (a miss, not an error)
c.set("baz", "qux")                  # set
c.get_multi(["foo", "baz", "missing"])  # getkq x3 (quiet: misses unanswered) + noop
c.add("foo", "x")                    # add -> Key exists
c.replace("foo", "bar2")             # replace -> success
c.delete("foo")                      # delete -> success
c.delete("foo")                      # delete -> Key not found
c.set("counter", "10")               # set
c.incr("counter", 5)                 # increment -> 15
c.decr("counter", 3)                 # decrement -> 12
c.flush_all()                        # flush
c.disconnect_all()
