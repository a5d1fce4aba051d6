#!/bin/sh
# Temporal's two databases on the shared PostgreSQL (the `temporal` role may create databases),
# made and brought to the schema the server image expects. Run by temporalio/admin-tools with
# SQL_PLUGIN, SQL_HOST, SQL_PORT, SQL_USER and SQL_PASSWORD in its environment, before every
# start of the server. Each step is idempotent: create-database ignores a database that exists,
# setup-schema leaves a versioned schema alone, and update-schema applies only the versions not
# yet applied — which is also how a newer server image's schema changes arrive.
set -eu

schemas=/etc/temporal/schema/postgresql/v12
for store in temporal:temporal visibility:temporal_visibility; do
    schema=${store%%:*}
    database=${store#*:}
    temporal-sql-tool --db "$database" create-database
    temporal-sql-tool --db "$database" setup-schema -v 0.0
    temporal-sql-tool --db "$database" update-schema --schema-dir "$schemas/$schema/versioned"
done
