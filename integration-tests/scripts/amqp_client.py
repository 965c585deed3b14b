"""AMQP 0-9-1 client (pika, blocking) for the AMQP captures and live test.

A fixed list of operations, the oracle of integration-tests/tests/proto_amqp.rs:
declare a topic exchange and two queues, bind one; publish 3 messages to
cnflow.q1 through the default exchange without confirms (channel 1) and 2
to cnflow.logs (routing key app.info, routed to cnflow.q2) with publisher
confirms (channel 2); consume the 3 from cnflow.q1 (channel 3, qos 10) and
settle them with ack, reject and nack; basic.get the 2 from cnflow.q2 (each
acked) then once more (get-empty); a passive declare of a missing queue
(channel 4, refused: channel.close 404); delete both queues and the
exchange; close. Prints what it saw.
Usage: amqp_client.py HOST:PORT
"""
import sys

import pika

host, port = sys.argv[1].rsplit(":", 1)
params = pika.ConnectionParameters(
    host=host, port=int(port), credentials=pika.PlainCredentials("guest", "guest"), heartbeat=0
)
conn = pika.BlockingConnection(params)
ch = conn.channel()
ch.exchange_declare("cnflow.logs", exchange_type="topic")
ch.queue_declare("cnflow.q1")
ch.queue_declare("cnflow.q2")
ch.queue_bind("cnflow.q2", "cnflow.logs", routing_key="app.*")
for i in range(3):
    ch.basic_publish("", "cnflow.q1", b"message %d" % i)

ch2 = conn.channel()
ch2.confirm_delivery()
for i in range(2):
    ch2.basic_publish("cnflow.logs", "app.info", b"x" * 100)

ch3 = conn.channel()
ch3.basic_qos(prefetch_count=10)
got = []


def on_message(c, method, props, body):
    got.append(body)
    n = len(got)
    if n == 1:
        c.basic_ack(method.delivery_tag)
    elif n == 2:
        c.basic_reject(method.delivery_tag, requeue=False)
    else:
        c.basic_nack(method.delivery_tag, requeue=False)


tag = ch3.basic_consume("cnflow.q1", on_message)
while len(got) < 3:
    conn.process_data_events(time_limit=1)
ch3.basic_cancel(tag)

gets = 0
empty = 0
for _ in range(3):
    method, props, body = ch.basic_get("cnflow.q2")
    if method is None:
        empty += 1
    else:
        gets += 1
        ch.basic_ack(method.delivery_tag)

ch4 = conn.channel()
refused = None
try:
    ch4.queue_declare("cnflow.missing", passive=True)
except pika.exceptions.ChannelClosedByBroker as e:
    refused = e.reply_code

ch.queue_delete("cnflow.q1")
ch.queue_delete("cnflow.q2")
ch.exchange_delete("cnflow.logs")
conn.close()
print(f"published 3 confirmed 2 consumed {len(got)} got {gets} empty {empty} refused {refused}")
