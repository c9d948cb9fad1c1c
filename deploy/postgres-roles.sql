-- Role layout for PostgreSQL in production: the service's role may only
-- INSERT and SELECT the audit trail (events and checkpoints), so even a
-- compromised service cannot rewrite history; only the owner role (used for
-- migrations, kept offline) owns the tables and their append-only triggers.
--
-- 1. As a superuser: create the owner and the database it owns, and let it
--    create tables:
--      CREATE ROLE gatekeeper_owner LOGIN;
--      CREATE DATABASE gatekeeper OWNER gatekeeper_owner;
--      \c gatekeeper
--      GRANT CREATE ON SCHEMA public TO gatekeeper_owner;
-- 2. Migrate as the owner:
--      GATEKEEPER_DATABASE_URL=postgres://gatekeeper_owner@db/gatekeeper gatekeeper migrate
-- 3. Then, as a superuser, run this file (it grants on the migrated tables):
--      psql -v ON_ERROR_STOP=1 -d gatekeeper -f deploy/postgres-roles.sql
-- 4. Serve as the service role:
--      GATEKEEPER_DATABASE_URL=postgres://gatekeeper_service@db/gatekeeper gatekeeper serve
-- `serve` checks diesel's bookkeeping and, with nothing pending, creates
-- nothing, so the service role needs no DDL rights. After a release with new
-- migrations: migrate as the owner (the migration Job), then run this file
-- again. Passwords and TLS are yours to set (ALTER ROLE ... PASSWORD,
-- sslmode=verify-full).

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gatekeeper_owner') THEN
        CREATE ROLE gatekeeper_owner LOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gatekeeper_service') THEN
        CREATE ROLE gatekeeper_service LOGIN;
    END IF;
END
$$;

DO $$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO gatekeeper_service', current_database());
END
$$;
GRANT USAGE ON SCHEMA public TO gatekeeper_service;

-- Tables the owner creates from now on (the migrations) get these rights.
ALTER DEFAULT PRIVILEGES FOR ROLE gatekeeper_owner IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO gatekeeper_service;

-- Apply to what exists already (run again after migrating if the tables
-- were created before this file ran).
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO gatekeeper_service;

-- The audit trail: append and read only. The triggers refuse UPDATE, DELETE
-- and TRUNCATE for everyone; these grants mean the service could not even
-- drop or disable the triggers (it owns nothing).
REVOKE UPDATE, DELETE, TRUNCATE ON audit_events, audit_checkpoints FROM gatekeeper_service;
GRANT SELECT, INSERT ON audit_events, audit_checkpoints TO gatekeeper_service;

-- The migration bookkeeping is read at start-up to see nothing is pending.
GRANT SELECT ON __diesel_schema_migrations TO gatekeeper_service;
-- The service never owns a table: it cannot drop or disable the triggers.
REVOKE CREATE ON SCHEMA public FROM gatekeeper_service;
