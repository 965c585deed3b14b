"""confluent-kafka producer + consumer (assign(), no group join) against a
broker at ADDR. Usage: kafka_client.py ADDR"""
import sys

from confluent_kafka import Consumer, Producer, TopicPartition

addr = sys.argv[1]
p = Producer({"bootstrap.servers": addr, "client.id": "cnflow-producer", "linger.ms": 0})
for i in range(3):
    p.produce("orders", key=str(i), value=f"order-{i}")
p.flush(10)

c = Consumer({"bootstrap.servers": addr, "client.id": "cnflow-consumer", "group.id": "cnflow-g",
              "enable.auto.commit": False, "auto.offset.reset": "earliest"})
c.assign([TopicPartition("orders", 0, 0)])
got = 0
for _ in range(15):
    m = c.poll(0.2)
    if m is not None and m.error() is None:
        got += 1
    if got >= 3:
        break
c.close()
print("consumed", got)
