"""MQTT traffic for the golden capture, against SERVER (host:port) running mosquitto.

- "mqtt-sub" (3.1.1) subscribes sensors/+/temp (QoS 1) and alerts (QoS 2);
- "mqtt-pub" (3.1.1, user name and password "hunter2-secret") publishes
  2 QoS 0 to sensors/42/temp, 2 QoS 1 to sensors/43/temp (the second 6 kB),
  1 QoS 2 to alerts; the subscriber receives all 5, then unsubscribes alerts;
- "mqtt-v5" (5.0) publishes 1 QoS 1 message to v5/topic with a user
  property traceparent, and subscribes to v5/# (QoS 0) with its own SUBACK;
- a raw socket client "raw-ping" (3.1.1, with a password) sends CONNECT,
  PINGREQ, DISCONNECT.
Prints what the clients saw; the test asserts on those facts.
"""
import socket
import struct
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
host, port = sys.argv[1].rsplit(":", 1)
port = int(port)
V2 = mqtt.CallbackAPIVersion.VERSION2


def connected(c):
    ev = threading.Event()
    c.on_connect = lambda *a: ev.set()
    c.connect(host, port, keepalive=60)
    c.loop_start()
    assert ev.wait(5), "no CONNACK"


got = []
all_in = threading.Event()
sub = mqtt.Client(V2, client_id="mqtt-sub", protocol=mqtt.MQTTv311)
subacked = threading.Event()
sub.on_subscribe = lambda *a: subacked.set()


def on_message(c, u, m):
    got.append((m.topic, m.qos, len(m.payload)))
    if len(got) == 5:
        all_in.set()


sub.on_message = on_message
connected(sub)
sub.subscribe([("sensors/+/temp", 1), ("alerts", 2)])
assert subacked.wait(5), "no SUBACK"

pub = mqtt.Client(V2, client_id="mqtt-pub", protocol=mqtt.MQTTv311)
pub.username_pw_set("alice", "hunter2-secret")
connected(pub)
for qos, topic, payload in [
    (0, "sensors/42/temp", b"21.5"),
    (0, "sensors/42/temp", b"21.6"),
    (1, "sensors/43/temp", b"19.0"),
    (1, "sensors/43/temp", b"x" * 6000),
    (2, "alerts", b"fire"),
]:
    pub.publish(topic, payload, qos=qos).wait_for_publish(5)
assert all_in.wait(5), f"received {got}"
unsubacked = threading.Event()
sub.on_unsubscribe = lambda *a: unsubacked.set()
sub.unsubscribe("alerts")
assert unsubacked.wait(5)
print("received", len(got), sorted(got))

v5 = mqtt.Client(V2, client_id="mqtt-v5", protocol=mqtt.MQTTv5)
connected(v5)
props = Properties(PacketTypes.PUBLISH)
props.UserProperty = ("traceparent", TRACEPARENT)
v5.publish("v5/topic", b"hello-v5", qos=1, properties=props).wait_for_publish(5)
v5acked = threading.Event()
v5.on_subscribe = lambda *a: v5acked.set()
v5.subscribe("v5/#", qos=0)
assert v5acked.wait(5)
print("v5 published 1 subscribed 1")

for c in (pub, v5, sub):
    c.disconnect()
    c.loop_stop()


def s(b):
    return struct.pack(">H", len(b)) + b


vh = s(b"MQTT") + bytes([4, 0xC2]) + struct.pack(">H", 30)  # user name + password + clean session
body = vh + s(b"raw-ping") + s(b"bob") + s(b"hunter2-secret")
raw = socket.create_connection((host, port))
raw.sendall(bytes([0x10, len(body)]) + body)
assert raw.recv(4) == b"\x20\x02\x00\x00", "raw CONNACK"
raw.sendall(b"\xc0\x00")
assert raw.recv(2) == b"\xd0\x00", "PINGRESP"
raw.sendall(b"\xe0\x00")
raw.close()
print("raw ping ok")
time.sleep(0.2)
