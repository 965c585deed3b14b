"""NATS traffic for the golden capture (nats-py), against SERVER (host:port).

Two connections:
- "nats-sub" (not verbose): subscribes orders.* (queue group "workers") and
  svc.echo, answers each svc.echo request with its payload upper-cased;
- "nats-pub" (verbose: every op acknowledged by +OK): publishes 3 plain
  messages to orders.new and 2 with headers (one carrying a traceparent) to
  orders.paid, makes 2 requests to svc.echo and 1 to svc.nobody (no
  responders), then flushes.
Prints what each side saw; the test asserts on those facts.
"""
import asyncio
import sys

import nats
from nats.errors import NoRespondersError

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def main(server):
    url = f"nats://{server}"
    sub_nc = await nats.connect(url, name="nats-sub", allow_reconnect=False)
    got = []
    done = asyncio.Event()

    async def on_order(msg):
        got.append(msg.subject)
        if len(got) == 5:
            done.set()

    async def on_echo(msg):
        await msg.respond(msg.data.upper())

    await sub_nc.subscribe("orders.*", queue="workers", cb=on_order)
    await sub_nc.subscribe("svc.echo", cb=on_echo)
    await sub_nc.flush()

    pub_nc = await nats.connect(url, name="nats-pub", verbose=True, allow_reconnect=False)
    for i in range(3):
        await pub_nc.publish("orders.new", f"order-{i}".encode())
    await pub_nc.publish("orders.paid", b"paid-0", headers={"traceparent": TRACEPARENT})
    await pub_nc.publish("orders.paid", b"paid-1", headers={"X-Kind": "card"})
    replies = []
    for word in (b"ping", b"pong"):
        r = await pub_nc.request("svc.echo", word, timeout=5)
        replies.append(r.data.decode())
    try:
        await pub_nc.request("svc.nobody", b"?", timeout=2)
        no_responders = False
    except NoRespondersError:
        no_responders = True
    await pub_nc.flush()
    await asyncio.wait_for(done.wait(), 5)
    print("published 5 received", len(got), sorted(got))
    print("replies", replies, "no_responders", no_responders)
    await pub_nc.close()
    await sub_nc.close()


asyncio.run(main(sys.argv[1]))
