-- The archive schema: what exists (dataset types, datasets, collections), where the bytes are (replicas), how
-- each product was made (lineage), where observations/tiles go (placement), who may write (tokens) and what
-- must still be announced (outbox). Dimension columns of `dataset` are added from the universe at start-up.

CREATE TABLE dimension_universe (
    namespace   text PRIMARY KEY,
    version     integer NOT NULL,
    definition  jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE dataset_type (
    id             serial PRIMARY KEY,
    name           text NOT NULL UNIQUE,
    dimensions     text[] NOT NULL,          -- required dimensions, closed under `requires`, universe order
    implied        text[] NOT NULL,          -- implied dimensions that may accompany a data ID
    storage_class  text NOT NULL,
    doc            text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE collection (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    type        text NOT NULL CHECK (type IN ('RUN', 'TAGGED', 'CHAINED')),
    doc         text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- A CHAINED collection's ordered children (search path). Cycles are refused by the service under a lock.
CREATE TABLE collection_chain (
    parent_id  bigint NOT NULL REFERENCES collection (id) ON DELETE CASCADE,
    position   integer NOT NULL,
    child_id   bigint NOT NULL REFERENCES collection (id),
    PRIMARY KEY (parent_id, position),
    UNIQUE (parent_id, child_id)
);
CREATE INDEX collection_chain_child ON collection_chain (child_id);

CREATE TABLE dataset (
    id               uuid PRIMARY KEY,
    dataset_type_id  integer NOT NULL REFERENCES dataset_type (id),
    run_id           bigint NOT NULL REFERENCES collection (id),
    data_id          jsonb NOT NULL,
    data_id_key      text NOT NULL,          -- canonical text of the required dimension values
    task             text,
    ingested_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (dataset_type_id, run_id, data_id_key)
);
CREATE INDEX dataset_run ON dataset (run_id);

-- TAGGED membership; (collection, type, data ID) unique enforces "one dataset per data ID" in a tag.
CREATE TABLE collection_tag (
    collection_id    bigint NOT NULL REFERENCES collection (id) ON DELETE CASCADE,
    dataset_id       uuid NOT NULL REFERENCES dataset (id) ON DELETE CASCADE,
    dataset_type_id  integer NOT NULL,
    data_id_key      text NOT NULL,
    PRIMARY KEY (collection_id, dataset_id),
    UNIQUE (collection_id, dataset_type_id, data_id_key)
);
CREATE INDEX collection_tag_dataset ON collection_tag (dataset_id);

CREATE TABLE replica (
    id          bigserial PRIMARY KEY,
    dataset_id  uuid NOT NULL REFERENCES dataset (id) ON DELETE CASCADE,
    site        text NOT NULL,
    uri         text NOT NULL,
    size        bigint NOT NULL CHECK (size >= 0),
    adler32     text NOT NULL CHECK (adler32 ~ '^[0-9a-f]{8}$'),
    sha256      text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    state       text NOT NULL CHECK (state IN ('available', 'copying', 'bad', 'deleted')),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (dataset_id, site, uri)
);
CREATE INDEX replica_site_state ON replica (site, state);

CREATE TABLE lineage (
    dataset_id     uuid PRIMARY KEY REFERENCES dataset (id) ON DELETE CASCADE,
    executable     text NOT NULL,
    image          text,
    version        text NOT NULL,
    config_digest  text NOT NULL,
    pipeline_run   text,
    task           text,
    attempt        integer NOT NULL DEFAULT 0
);

CREATE TABLE lineage_input (
    dataset_id  uuid NOT NULL REFERENCES lineage (dataset_id) ON DELETE CASCADE,
    input_id    uuid NOT NULL REFERENCES dataset (id),
    PRIMARY KEY (dataset_id, input_id)
);
CREATE INDEX lineage_input_downstream ON lineage_input (input_id, dataset_id);

CREATE TABLE placement (
    dimension       text NOT NULL CHECK (dimension IN ('observation', 'tile')),
    value           bigint NOT NULL,
    primary_site    text NOT NULL,
    secondary_site  text,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dimension, value)
);
CREATE INDEX placement_primary ON placement (primary_site);

CREATE TABLE api_token (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    site        text,                        -- NULL for an admin token
    is_admin    boolean NOT NULL DEFAULT false,
    token_hash  text NOT NULL UNIQUE,        -- sha256 of the token; the token itself is never stored
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (is_admin OR site IS NOT NULL)
);

-- Events written in the same transaction as the change they announce; a relay publishes them to JetStream
-- with Nats-Msg-Id = msg_id and then stamps published_at.
CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    msg_id        uuid NOT NULL UNIQUE,
    subject       text NOT NULL,
    payload       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;
