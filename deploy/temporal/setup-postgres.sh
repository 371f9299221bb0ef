#!/bin/sh
# The `temporal-schema` job of docker-compose.yml (temporalio/admin-tools): create Temporal's
# two PostgreSQL databases and bring both schemas to the version this server image ships.
# Safe to run on every `docker compose up`: `create` tolerates an existing database and
# `update-schema` applies only the versions that are missing.
set -eu
: "${POSTGRES_SEEDS:?}" "${POSTGRES_USER:?}" "${SQL_PASSWORD:?}"
port=${DB_PORT:-5432}
schema=/etc/temporal/schema/postgresql/v12

echo "waiting for PostgreSQL at ${POSTGRES_SEEDS}:${port}"
until nc -z -w 5 "$POSTGRES_SEEDS" "$port"; do sleep 1; done

tool() {
  temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$port" -u "$POSTGRES_USER" "$@"
}
for db in temporal temporal_visibility; do
  case $db in temporal) dir=$schema/temporal/versioned ;; *) dir=$schema/visibility/versioned ;; esac
  tool --db "$db" create || echo "database $db exists"
  # setup-schema -v 0.0 only creates the version table the first time; it fails harmlessly after
  tool --db "$db" setup-schema -v 0.0 2>/dev/null || true
  tool --db "$db" update-schema -d "$dir"
done
echo "Temporal schema is up to date"
