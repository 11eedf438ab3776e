#!/usr/bin/env bash
# Writes the replica set's key file from MONGO_REPLICA_SET_KEY (deploy/.env), readable by mongod
# only, then hands over to the image's own entrypoint (root user, init scripts, then mongod).
set -euo pipefail
: "${MONGO_REPLICA_SET_KEY:?set MONGO_REPLICA_SET_KEY in deploy/.env}"
install -d -o mongodb -g mongodb -m 700 /etc/mongo
printf '%s' "$MONGO_REPLICA_SET_KEY" > /etc/mongo/replica.key
chown mongodb:mongodb /etc/mongo/replica.key
chmod 400 /etc/mongo/replica.key
exec docker-entrypoint.sh "$@"
