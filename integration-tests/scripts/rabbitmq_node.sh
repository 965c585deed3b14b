#!/usr/bin/env bash
# Runs a throwaway RabbitMQ node (Debian rabbitmq-server) in the foreground
# (exec: the caller's pid is the Erlang VM), every file under DIR: config,
# Mnesia, logs, Erlang cookie (HOME). Listens on IP:PORT for AMQP; Erlang
# distribution and epmd stay on 127.0.0.1 of the current network namespace.
# Start `epmd -address 127.0.0.1` first as a child of your own (the node
# would otherwise start a daemonised epmd that outlives it).
#   rabbitmq_node.sh DIR IP PORT
set -euo pipefail
DIR=$1 IP=$2 PORT=$3
mkdir -p "$DIR/log" "$DIR/mnesia"
# guest may connect from another namespace (it is local-only by default).
cat >"$DIR/rabbitmq.conf" <<CONF
loopback_users = none
CONF
echo '[].' >"$DIR/enabled_plugins"
export HOME=$DIR
export RABBITMQ_NODENAME=cnflow@localhost
export RABBITMQ_NODE_IP_ADDRESS=$IP RABBITMQ_NODE_PORT=$PORT
export RABBITMQ_DIST_PORT=25672 ERL_EPMD_ADDRESS=127.0.0.1
export RABBITMQ_MNESIA_BASE=$DIR/mnesia RABBITMQ_LOG_BASE=$DIR/log RABBITMQ_LOGS=-
export RABBITMQ_CONFIG_FILE=$DIR/rabbitmq.conf RABBITMQ_ENABLED_PLUGINS_FILE=$DIR/enabled_plugins
export RABBITMQ_PID_FILE=$DIR/rabbit.pid
exec /usr/lib/rabbitmq/bin/rabbitmq-server
