#!/usr/bin/env bash
# Make sure a RabbitMQ broker answers on 127.0.0.1:5672: start it if installed, install it
# (Debian's package) if missing. Used by `make test` and CI; tests also probe on their own.
set -euo pipefail

port_open() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

if port_open; then
  exit 0
fi
if ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "rabbitmq-server not found: installing it with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq rabbitmq-server >/dev/null
fi
echo "starting rabbitmq-server" >&2
rabbitmq-server -detached || true
for _ in $(seq 1 90); do
  if port_open; then
    exit 0
  fi
  sleep 1
done
echo "RabbitMQ did not start answering on 127.0.0.1:5672 within 90 s" >&2
exit 1
