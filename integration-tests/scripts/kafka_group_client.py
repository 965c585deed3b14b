"""confluent-kafka producer + consumer-group member against a broker at ADDR:
3 records to orders/0, then a consumer that subscribes as group
cnflow-group (FindCoordinator, JoinGroup, SyncGroup, Heartbeat, OffsetFetch,
ListOffsets, Fetch), commits (OffsetCommit) and leaves (LeaveGroup).
Usage: kafka_group_client.py ADDR"""
import sys
import time

from confluent_kafka import Consumer, Producer

addr = sys.argv[1]
p = Producer({"bootstrap.servers": addr, "client.id": "cnflow-producer", "linger.ms": 0})
for i in range(3):
    p.produce("orders", key=str(i), value=f"order-{i}", partition=0)
p.flush(10)

c = Consumer({"bootstrap.servers": addr, "client.id": "cnflow-group-consumer", "group.id": "cnflow-group",
              "enable.auto.commit": False, "auto.offset.reset": "earliest", "session.timeout.ms": 10000,
              "heartbeat.interval.ms": 1000, "fetch.wait.max.ms": 1000})
c.subscribe(["orders"])
got = []
deadline = time.time() + 50
while time.time() < deadline and len(got) < 3:
    m = c.poll(0.5)
    if m is not None and m.error() is None:
        got.append(m.value().decode())
if got:
    c.commit(asynchronous=False)
c.close()
print("consumed", got)
sys.exit(0 if len(got) == 3 else 1)
