-- The transfer service's schema (PostgreSQL schema `sgs_transfer`): replication rules, the locks they hold on
-- (dataset, Site) pairs, the transfers that make missing copies, and what the service knows of datasets and
-- replicas (mirrored from the archive's events). Who may call the API lives in api_token.

CREATE TABLE api_token (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    is_admin    boolean NOT NULL DEFAULT false,
    token_hash  text NOT NULL UNIQUE,        -- sha256 of the token; the token itself is never stored
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- "N copies of datasets matching S at Sites matching E". Counters are kept by the lock triggers below, in
-- the same transaction as the locks they count; the state is derived from them, so it can never disagree.
CREATE TABLE rule (
    id                 uuid PRIMARY KEY,
    owner              text NOT NULL,
    dataset_type       text,                                   -- NULL: every type
    collections        text[] NOT NULL DEFAULT '{}',           -- RUN collections or glob patterns; empty: all
    where_expr         text NOT NULL DEFAULT '',               -- the archive's dimension expression
    copies             integer NOT NULL CHECK (copies BETWEEN 1 AND 64),
    site_expression    text NOT NULL,
    source_expression  text,                                   -- Sites preferred as sources, when they hold one
    grouping           text NOT NULL CHECK (grouping IN ('all', 'dataset')),
    priority           integer NOT NULL CHECK (priority BETWEEN 1 AND 5),
    expires_at         timestamptz,
    suspended          boolean NOT NULL DEFAULT false,
    suspended_by       text,
    chosen_sites       text[],                                  -- grouping 'all': the Sites every dataset goes to
    unsatisfied        text,                                    -- why the rule cannot be met as asked (or NULL)
    evaluated_at       timestamptz,                             -- NULL until the datasets already archived are done
    locks_ok           integer NOT NULL DEFAULT 0,
    locks_replicating  integer NOT NULL DEFAULT 0,
    locks_stuck        integer NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    state              text GENERATED ALWAYS AS (
        CASE WHEN suspended THEN 'SUSPENDED'
             WHEN locks_stuck > 0 OR unsatisfied IS NOT NULL THEN 'STUCK'
             WHEN locks_replicating > 0 OR evaluated_at IS NULL THEN 'REPLICATING'
             ELSE 'OK' END) STORED
);
CREATE INDEX rule_state ON rule (state);
CREATE INDEX rule_expires ON rule (expires_at) WHERE expires_at IS NOT NULL;

-- What the service knows of a dataset: enough to match rules and to check copies (one file per dataset).
CREATE TABLE dataset (
    id            uuid PRIMARY KEY,
    dataset_type  text NOT NULL,
    run           text NOT NULL,
    data_id       jsonb NOT NULL,
    size          bigint NOT NULL CHECK (size >= 0),
    adler32       text NOT NULL,
    sha256        text NOT NULL,
    seen_at       timestamptz NOT NULL DEFAULT now()
);

-- Where copies are. origin 'archive': registered by someone else (never reaped here); 'transfer': made by this
-- service. tombstone: since when no lock holds a transfer-made copy (the reaper's candidates).
CREATE TABLE replica (
    dataset_id          uuid NOT NULL REFERENCES dataset (id) ON DELETE CASCADE,
    site                text NOT NULL,
    uri                 text NOT NULL,
    state               text NOT NULL CHECK (state IN ('available', 'copying', 'bad', 'deleting', 'deleted')),
    origin              text NOT NULL CHECK (origin IN ('archive', 'transfer')),
    archive_replica_id  bigint,
    verified_at         timestamptz,
    tombstone           timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset_id, site)
);
CREATE INDEX replica_site ON replica (site, state);
CREATE INDEX replica_tombstone ON replica (tombstone) WHERE tombstone IS NOT NULL;

-- A rule's claim on one (dataset, Site): OK when a verified copy is there, REPLICATING while it is made,
-- STUCK when making it keeps failing (the transfer says why). The idempotency key of rule evaluation.
CREATE TABLE lock (
    rule_id     uuid NOT NULL REFERENCES rule (id) ON DELETE CASCADE,
    dataset_id  uuid NOT NULL REFERENCES dataset (id) ON DELETE CASCADE,
    site        text NOT NULL,
    state       text NOT NULL CHECK (state IN ('OK', 'REPLICATING', 'STUCK')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule_id, dataset_id, site)
);
CREATE INDEX lock_replica ON lock (dataset_id, site);

-- One copy to make: at most one per (dataset, destination) whatever the number of rules wanting it. The
-- row is the truth; the JetStream message only says "look at row id". generation counts (re)queueings, and
-- published_gen how far the queue has been told, so a crash between commit and publish is repaired.
CREATE TABLE transfer (
    id               bigserial PRIMARY KEY,
    dataset_id       uuid NOT NULL REFERENCES dataset (id) ON DELETE CASCADE,
    destination      text NOT NULL,
    state            text NOT NULL CHECK (state IN ('QUEUED', 'ACTIVE', 'DONE', 'STUCK', 'CANCELLED')),
    priority         integer NOT NULL DEFAULT 3,
    attempts         integer NOT NULL DEFAULT 0,
    generation       integer NOT NULL DEFAULT 1,
    published_gen    integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    first_failed_at  timestamptz,
    lease_until      timestamptz,
    worker           text,
    source           text,
    avoid_source     text,                    -- a source whose copy failed verification: read another next time
    last_error       text,
    bytes            bigint,
    queued_at        timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    copied_at        timestamptz,
    registered_at    timestamptz,
    done_at          timestamptz,
    UNIQUE (dataset_id, destination)
);
CREATE INDEX transfer_open ON transfer (state, next_attempt_at) WHERE state IN ('QUEUED', 'ACTIVE', 'STUCK');
CREATE INDEX transfer_unpublished ON transfer (id) WHERE published_gen < generation;
CREATE INDEX transfer_state_id ON transfer (state, id);

-- Row locks are always taken in one order, rule -> lock -> transfer -> replica (the service's code follows it
-- too), so concurrent workers, evaluators and rule deletions wait for each other instead of deadlocking.

-- Lock counters per rule, maintained per statement from the transition tables (one UPDATE of each rule row per
-- statement, not per lock: a 10,000-dataset rule inserts its locks in a few statements).
-- Rule rows are locked in id order first: two transactions changing locks of the same rules never deadlock.
CREATE FUNCTION lock_counts_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM rule WHERE id IN (SELECT rule_id FROM new_locks) ORDER BY id FOR NO KEY UPDATE;
    UPDATE rule r SET locks_ok = r.locks_ok + d.ok, locks_replicating = r.locks_replicating + d.rep,
                      locks_stuck = r.locks_stuck + d.stuck, updated_at = now()
      FROM (SELECT rule_id, count(*) FILTER (WHERE state = 'OK') AS ok,
                   count(*) FILTER (WHERE state = 'REPLICATING') AS rep,
                   count(*) FILTER (WHERE state = 'STUCK') AS stuck
              FROM new_locks GROUP BY rule_id) d
     WHERE r.id = d.rule_id;
    RETURN NULL;
END $$;

CREATE FUNCTION lock_counts_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM rule WHERE id IN (SELECT rule_id FROM old_locks) ORDER BY id FOR NO KEY UPDATE;
    UPDATE rule r SET locks_ok = r.locks_ok - d.ok, locks_replicating = r.locks_replicating - d.rep,
                      locks_stuck = r.locks_stuck - d.stuck, updated_at = now()
      FROM (SELECT rule_id, count(*) FILTER (WHERE state = 'OK') AS ok,
                   count(*) FILTER (WHERE state = 'REPLICATING') AS rep,
                   count(*) FILTER (WHERE state = 'STUCK') AS stuck
              FROM old_locks GROUP BY rule_id) d
     WHERE r.id = d.rule_id;
    RETURN NULL;
END $$;

CREATE FUNCTION lock_counts_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM rule WHERE id IN (SELECT rule_id FROM new_locks) ORDER BY id FOR NO KEY UPDATE;
    UPDATE rule r SET locks_ok = r.locks_ok + d.ok, locks_replicating = r.locks_replicating + d.rep,
                      locks_stuck = r.locks_stuck + d.stuck, updated_at = now()
      FROM (SELECT rule_id, sum(sign * (state = 'OK')::int) AS ok,
                   sum(sign * (state = 'REPLICATING')::int) AS rep,
                   sum(sign * (state = 'STUCK')::int) AS stuck
              FROM (SELECT rule_id, state, 1 AS sign FROM new_locks
                    UNION ALL SELECT rule_id, state, -1 AS sign FROM old_locks) changed
             GROUP BY rule_id) d
     WHERE r.id = d.rule_id AND (d.ok <> 0 OR d.rep <> 0 OR d.stuck <> 0);
    RETURN NULL;
END $$;

CREATE TRIGGER lock_counts_insert AFTER INSERT ON lock REFERENCING NEW TABLE AS new_locks
    FOR EACH STATEMENT EXECUTE FUNCTION lock_counts_inserted();
CREATE TRIGGER lock_counts_delete AFTER DELETE ON lock REFERENCING OLD TABLE AS old_locks
    FOR EACH STATEMENT EXECUTE FUNCTION lock_counts_deleted();
CREATE TRIGGER lock_counts_update AFTER UPDATE ON lock REFERENCING OLD TABLE AS old_locks NEW TABLE AS new_locks
    FOR EACH STATEMENT EXECUTE FUNCTION lock_counts_updated();

-- Bumped whenever the set of active rules or their definition changes, so evaluators reload their compiled
-- rules only then (lock counters change the rule row all the time and must not count).
CREATE TABLE rule_version (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version    bigint NOT NULL
);
INSERT INTO rule_version VALUES (true, 0);

CREATE FUNCTION bump_rule_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE rule_version SET version = version + 1;
    RETURN NULL;
END $$;

CREATE TRIGGER rule_version_bump AFTER INSERT OR DELETE OR UPDATE OF suspended, expires_at, chosen_sites, evaluated_at
    ON rule FOR EACH STATEMENT EXECUTE FUNCTION bump_rule_version();

-- Destinations a worker paused (repeated failures to reach their store): shown by GET /sites, and history.
CREATE TABLE destination_pause (
    id          bigserial PRIMARY KEY,
    site        text NOT NULL,
    worker      text NOT NULL,
    reason      text NOT NULL,
    paused_at   timestamptz NOT NULL DEFAULT now(),
    resumed_at  timestamptz
);
CREATE INDEX destination_pause_open ON destination_pause (site) WHERE resumed_at IS NULL;
