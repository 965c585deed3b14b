"""confluent-kafka producer + consumer against a broker at ADDR: two produce
batches (3 + 2 records) to orders/0, then a consumer (assign(), no group join)
that reads them from offset 0, commits and reads its committed offset back.
Usage: kafka_fetch_client.py ADDR"""
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition

addr = sys.argv[1]
p = Producer({"bootstrap.servers": addr, "client.id": "cnflow-producer", "linger.ms": 0})
for batch in ([0, 1, 2], [3, 4]):
    for i in batch:
        p.produce("orders", key=str(i), value=f"order-{i}", partition=0)
    p.flush(10)

c = Consumer({"bootstrap.servers": addr, "client.id": "cnflow-consumer", "group.id": "cnflow-g",
              "enable.auto.commit": False, "auto.offset.reset": "earliest",
              "fetch.wait.max.ms": 200})
c.assign([TopicPartition("orders", 0, 0)])
got = []
deadline = time.time() + 10
while time.time() < deadline and len(got) < 5:
    m = c.poll(0.2)
    if m is not None and m.error() is None:
        got.append(m.value().decode())
if got:
    c.commit(offsets=[TopicPartition("orders", 0, len(got))], asynchronous=False)
    print("committed", c.committed([TopicPartition("orders", 0)], timeout=5))
c.close()
print("consumed", got)
sys.exit(0 if len(got) == 5 else 1)
