-- One database and one login role per PIM context, for the local docker compose setup.
--
-- The postgres image runs this file once, with psql, as the superuser, when the data volume is
-- empty (/docker-entrypoint-initdb.d). To run it again: `docker compose down -v`.
--
-- Each role owns only its own database and cannot connect to the others: a context reads and
-- writes only its own database (ARCHITECTURE.md §2). The roles run the migrations at start
-- (PIM_MIGRATE_ON_START=true), so they own their tables.
--
-- PASSWORDS: the defaults below are LOCAL-ONLY, for a throwaway development stack. Override
-- them with the environment variables PIM_<SERVICE>_DB_PASSWORD of the postgres container
-- (read here with \getenv, psql 15+) and use the same value in that service's
-- PIM_DATABASE_URL. Never use these defaults anywhere else.

\set ON_ERROR_STOP on

\set assignment_password 'assignment-local-only'
\set activation_password 'activation-local-only'
\set approval_password 'approval-local-only'
\set notification_password 'notification-local-only'
\set audit_password 'audit-local-only'

-- \getenv leaves the variable unchanged when the environment variable is not set.
\getenv assignment_password PIM_ASSIGNMENT_DB_PASSWORD
\getenv activation_password PIM_ACTIVATION_DB_PASSWORD
\getenv approval_password PIM_APPROVAL_DB_PASSWORD
\getenv notification_password PIM_NOTIFICATION_DB_PASSWORD
\getenv audit_password PIM_AUDIT_DB_PASSWORD

CREATE ROLE pim_assignment LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'assignment_password';
CREATE DATABASE pim_assignment OWNER pim_assignment;
REVOKE ALL ON DATABASE pim_assignment FROM PUBLIC;

CREATE ROLE pim_activation LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'activation_password';
CREATE DATABASE pim_activation OWNER pim_activation;
REVOKE ALL ON DATABASE pim_activation FROM PUBLIC;

CREATE ROLE pim_approval LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'approval_password';
CREATE DATABASE pim_approval OWNER pim_approval;
REVOKE ALL ON DATABASE pim_approval FROM PUBLIC;

CREATE ROLE pim_notification LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'notification_password';
CREATE DATABASE pim_notification OWNER pim_notification;
REVOKE ALL ON DATABASE pim_notification FROM PUBLIC;

CREATE ROLE pim_audit LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'audit_password';
CREATE DATABASE pim_audit OWNER pim_audit;
REVOKE ALL ON DATABASE pim_audit FROM PUBLIC;

-- The maintenance database this script runs in (POSTGRES_DB) stays the superuser's.
SELECT format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC', current_database()) \gexec
