#!/bin/sh
# Run once by the postgres image, when its data volume is new: a role for Temporal, which
# creates its own two databases (deploy/temporal/setup-schema.sh), and a role owning paysaga's
# database. Neither is a superuser, and neither reaches the other's data. The passwords come
# from the container's environment (docker-compose.yml) and reach SQL as quoted literals.
set -eu

psql --set ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    --set temporal_password="$TEMPORAL_DB_PASSWORD" \
    --set paysaga_password="$PAYSAGA_DB_PASSWORD" <<'SQL'
CREATE ROLE temporal LOGIN CREATEDB PASSWORD :'temporal_password';
CREATE ROLE paysaga LOGIN PASSWORD :'paysaga_password';
CREATE DATABASE paysaga OWNER paysaga;
REVOKE ALL ON DATABASE paysaga FROM PUBLIC;
SQL
