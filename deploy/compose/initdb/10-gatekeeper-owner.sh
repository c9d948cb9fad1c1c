#!/usr/bin/env bash
# Runs once, when the postgres container initialises an empty data volume
# (docker-entrypoint-initdb.d). It prepares what deploy/postgres-roles.sql
# expects: the two login roles, and the database owned by gatekeeper_owner.
# The grants themselves come from postgres-roles.sql, which the compose
# `db-roles` one-shot applies after every migration.
set -euo pipefail

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v owner_password="$GATEKEEPER_OWNER_PASSWORD" \
  -v service_password="$GATEKEEPER_SERVICE_PASSWORD" \
  -v dbname="$POSTGRES_DB" <<'SQL'
CREATE ROLE gatekeeper_owner LOGIN PASSWORD :'owner_password';
CREATE ROLE gatekeeper_service LOGIN PASSWORD :'service_password';
ALTER DATABASE :"dbname" OWNER TO gatekeeper_owner;
SQL
