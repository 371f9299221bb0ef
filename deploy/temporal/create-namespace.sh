#!/bin/sh
# The `temporal-namespace` job of docker-compose.yml (temporalio/admin-tools): register the
# namespace crisis-engine uses once the frontend serves. Closed incidents' histories are kept
# for RETENTION (default 720h, a month, for audits and replays; Temporal's default is 24h).
set -eu
address=${TEMPORAL_ADDRESS:-temporal:7233}
namespace=${NAMESPACE:-default}
retention=${RETENTION:-720h}

attempt=0
until temporal operator cluster health --address "$address" | grep -q SERVING; do
  attempt=$((attempt + 1))
  [ "$attempt" -lt 60 ] || { echo "Temporal at $address never became healthy" >&2; exit 1; }
  sleep 2
done
if temporal operator namespace describe --namespace "$namespace" --address "$address" >/dev/null 2>&1; then
  echo "namespace $namespace exists"
else
  temporal operator namespace create --namespace "$namespace" --retention "$retention" \
    --address "$address"
  echo "namespace $namespace created (retention $retention)"
fi
