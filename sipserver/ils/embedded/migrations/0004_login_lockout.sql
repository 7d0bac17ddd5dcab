-- sipserver embedded ILS schema, version 4: failed logins shared by every daemon on one database.
--
-- With server.lockout.shared naming a postgresql backend, each daemon writes here the failed
-- logins it sees and reads an address's failures and lock before checking its password, so that a
-- terminal guessing through a balancer is locked at the limit over all the daemons
-- (sipserver/daemon/shared_lockout.py). Times are seconds since the epoch by the database's clock,
-- the one clock every daemon shares; rows older than the lockout window are deleted as failures come.
-- sqlite gets the tables too (one migration list), and never uses them.

CREATE TABLE login_failures (
    address TEXT NOT NULL,
    failed_at DOUBLE PRECISION NOT NULL
);

CREATE INDEX login_failures_by_address ON login_failures (address, failed_at);

CREATE INDEX login_failures_by_time ON login_failures (failed_at);

CREATE TABLE login_locks (
    address TEXT NOT NULL PRIMARY KEY,
    locked_until DOUBLE PRECISION NOT NULL
);
