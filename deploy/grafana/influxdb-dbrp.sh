#!/bin/sh
# One-shot (compose service `influxdb-dbrp`): map database `citybrain`, retention policy
# `autogen` (default) to the bucket `citybrain` explicitly, for Grafana's InfluxQL queries.
# InfluxDB 2.7 already serves the same mapping virtually for every bucket, so Grafana works
# before this has run; this pins it. Idempotent: does nothing if an explicit mapping exists.
set -eu
: "${INFLUX_HOST:=http://influxdb:8086}" "${INFLUX_ORG:=citybrain}" "${BUCKET:=citybrain}"
export INFLUX_HOST INFLUX_ORG  # INFLUX_TOKEN comes from the environment

i=0
until influx ping >/dev/null 2>&1; do
  i=$((i + 1)); [ "$i" -ge 60 ] && { echo "influxdb not reachable at $INFLUX_HOST" >&2; exit 1; }
  sleep 2
done
# setup (DOCKER_INFLUXDB_INIT_*) may still be creating the bucket on a first start
i=0
until bucket_id=$(influx bucket list --name "$BUCKET" --hide-headers 2>/dev/null | cut -f1) \
      && [ -n "$bucket_id" ]; do
  i=$((i + 1)); [ "$i" -ge 60 ] && { echo "bucket $BUCKET not found" >&2; exit 1; }
  sleep 2
done
if influx v1 dbrp list --db "$BUCKET" --hide-headers 2>/dev/null | grep -q "$bucket_id"; then
  echo "DBRP $BUCKET/autogen -> bucket $BUCKET ($bucket_id) already mapped"
  exit 0
fi
influx v1 dbrp create --bucket-id "$bucket_id" --db "$BUCKET" --rp autogen --default
echo "DBRP $BUCKET/autogen -> bucket $BUCKET ($bucket_id) created"
