"""kafka-python (pure Python client; it negotiates JoinGroup up to v7 and
SyncGroup up to v5 with the broker: flexible versions, compact strings and
tagged fields) producer + consumer-group member against a broker at ADDR:
3 records to payments/0, then a consumer in group cnflow-flex that
subscribes to payments, consumes them, commits and leaves.
Prints what the client saw, one fact per line (the test's oracle).
Usage: kafka_flex_group_client.py ADDR"""
import sys
import time

from kafka import KafkaConsumer, KafkaProducer

addr = sys.argv[1]
p = KafkaProducer(bootstrap_servers=addr, client_id="cnflow-flex-producer", linger_ms=0)
for i in range(3):
    p.send("payments", key=str(i).encode(), value=f"payment-{i}".encode(), partition=0)
p.flush(10)
p.close()

c = KafkaConsumer(bootstrap_servers=addr, client_id="cnflow-flex-consumer", group_id="cnflow-flex",
                  enable_auto_commit=False, auto_offset_reset="earliest", session_timeout_ms=10000,
                  heartbeat_interval_ms=1000, fetch_max_wait_ms=500)
c.subscribe(["payments"])
got = []
deadline = time.time() + 40
while time.time() < deadline and len(got) < 3:
    for _tp, msgs in c.poll(timeout_ms=500).items():
        got.extend(m.value.decode() for m in msgs)
print("assignment", sorted(f"{tp.topic}/{tp.partition}" for tp in c.assignment()))
if got:
    c.commit()
c.close()
print("consumed", got)
sys.exit(0 if len(got) == 3 else 1)
