//! The PostgreSQL schema, as migrations applied in order, each in its own
//! transaction; `schema_version` counts how many ran. It starts from the
//! SQLite store's schema as it is now (PostgreSQL has no older data to
//! carry), so migration 1 is the whole of it; later ones are appended.
//!
//! JSON values (deployment state, events, notices, reports) are `TEXT`
//! holding exactly what serde wrote, as in SQLite; timestamps are `BIGINT`
//! milliseconds.

/// The advisory lock key under which migrations run ("gantry" in ASCII).
pub(super) const LOCK_KEY: i64 = 0x67_61_6e_74_72_79;

pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE releases (
    version       TEXT PRIMARY KEY,
    digest        TEXT NOT NULL,
    size          BIGINT NOT NULL,
    artifact_kind TEXT NOT NULL,
    git_sha       TEXT,
    signature     TEXT,
    signed_by     TEXT,
    created_at    BIGINT NOT NULL,
    created_by    TEXT NOT NULL
);
CREATE TABLE deployments (
    id          BIGINT PRIMARY KEY,
    env         TEXT NOT NULL,
    version     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    phase       TEXT NOT NULL,
    active      BOOLEAN NOT NULL,
    created_at  BIGINT NOT NULL,
    finished_at BIGINT,
    state       TEXT NOT NULL
);
-- Deployment numbers: taken before the row is built, never reused.
CREATE SEQUENCE deployment_ids OWNED BY deployments.id;
-- At most one deployment in progress per environment, however many
-- controllers create them at once.
CREATE UNIQUE INDEX deployments_one_active ON deployments(env) WHERE active;
CREATE INDEX deployments_env ON deployments(env, id);
CREATE TABLE events (
    seq        BIGSERIAL PRIMARY KEY,
    deployment BIGINT NOT NULL REFERENCES deployments(id),
    at         BIGINT NOT NULL,
    event      TEXT NOT NULL
);
CREATE INDEX events_deployment ON events(deployment, seq);
CREATE TABLE deployment_log (
    seq        BIGSERIAL PRIMARY KEY,
    deployment BIGINT NOT NULL REFERENCES deployments(id),
    at         BIGINT NOT NULL,
    phase      TEXT NOT NULL,
    message    TEXT NOT NULL
);
CREATE INDEX deployment_log_deployment ON deployment_log(deployment, seq);
CREATE TABLE env_state (
    env        TEXT PRIMARY KEY,
    version    TEXT NOT NULL,
    instances  TEXT NOT NULL,
    deployment BIGINT NOT NULL REFERENCES deployments(id),
    since      BIGINT NOT NULL
);

-- Raises the message given to the trigger: the rules below refuse changes.
CREATE FUNCTION gantry_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'integrity_constraint_violation';
END $$;

-- The audit trail: append-only, each record chained to the one before by SHA-256.
CREATE TABLE audit (
    seq       BIGINT PRIMARY KEY,
    at        BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    subject   TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE TRIGGER audit_append_only BEFORE UPDATE ON audit
FOR EACH ROW EXECUTE FUNCTION gantry_refuse('audit records are append-only');
-- TRUNCATE passes row triggers by: refused outright.
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
FOR EACH STATEMENT EXECUTE FUNCTION gantry_refuse('audit records are append-only: TRUNCATE is refused');
-- The last pruned record, which the first kept one links to.
CREATE TABLE audit_anchor (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
-- The chain's head: the last number handed out and its hash. Appends lock
-- this row (SELECT … FOR UPDATE), so writers on any controller chain one
-- after the other. It only moves forward, so no number is reused.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
CREATE TRIGGER audit_head_forward BEFORE UPDATE ON audit_head
FOR EACH ROW WHEN (NEW.seq <= OLD.seq)
EXECUTE FUNCTION gantry_refuse('the audit head only moves forward');
CREATE TRIGGER audit_head_kept BEFORE DELETE ON audit_head
FOR EACH ROW EXECUTE FUNCTION gantry_refuse('the audit head is never deleted');
CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_head
FOR EACH STATEMENT EXECUTE FUNCTION gantry_refuse('the audit head is never deleted');

CREATE FUNCTION audit_append_past_head() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.seq <= (SELECT seq FROM audit_head WHERE id = 1) THEN
        RAISE EXCEPTION 'audit sequence numbers are never reused' USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER audit_append_past_head BEFORE INSERT ON audit
FOR EACH ROW EXECUTE FUNCTION audit_append_past_head();

-- Records are deleted only at or below the anchor, which only the prune path
-- moves (and it appends a record naming the new anchor first).
CREATE FUNCTION audit_delete_below_anchor() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.seq > COALESCE((SELECT seq FROM audit_anchor WHERE id = 1), 0) THEN
        RAISE EXCEPTION 'audit records are append-only: only pruning drops them, up to the anchor it records'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER audit_delete_below_anchor BEFORE DELETE ON audit
FOR EACH ROW EXECUTE FUNCTION audit_delete_below_anchor();

-- The anchor only moves forward, onto a kept record with that very hash.
CREATE FUNCTION audit_anchor_on_record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.seq <= OLD.seq THEN
        RAISE EXCEPTION 'the audit anchor only moves forward, onto a kept record'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM audit WHERE seq = NEW.seq AND hash = NEW.hash) THEN
        RAISE EXCEPTION 'the audit anchor must be a kept record'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER audit_anchor_on_record BEFORE INSERT OR UPDATE ON audit_anchor
FOR EACH ROW EXECUTE FUNCTION audit_anchor_on_record();
CREATE TRIGGER audit_anchor_kept BEFORE DELETE ON audit_anchor
FOR EACH ROW EXECUTE FUNCTION gantry_refuse('the audit anchor is never deleted');
CREATE TRIGGER audit_anchor_no_truncate BEFORE TRUNCATE ON audit_anchor
FOR EACH STATEMENT EXECUTE FUNCTION gantry_refuse('the audit anchor is never deleted');

-- Signed checkpoints of the head (the key is outside the database).
CREATE TABLE audit_checkpoints (
    id          BIGSERIAL PRIMARY KEY,
    seq         BIGINT NOT NULL,
    hash        TEXT NOT NULL,
    anchor_seq  BIGINT NOT NULL,
    anchor_hash TEXT NOT NULL,
    at          BIGINT NOT NULL,
    public_key  TEXT NOT NULL,
    signature   TEXT NOT NULL
);
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE ON audit_checkpoints
FOR EACH ROW EXECUTE FUNCTION gantry_refuse('audit checkpoints are append-only');
CREATE FUNCTION audit_checkpoints_below_anchor() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.seq > COALESCE((SELECT seq FROM audit_anchor WHERE id = 1), 0) THEN
        RAISE EXCEPTION 'audit checkpoints are dropped only with the records they name'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER audit_checkpoints_below_anchor BEFORE DELETE ON audit_checkpoints
FOR EACH ROW EXECUTE FUNCTION audit_checkpoints_below_anchor();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
FOR EACH STATEMENT EXECUTE FUNCTION gantry_refuse('audit checkpoints are append-only');

-- People, their roles, and their API tokens (only a SHA-256 of each secret is kept).
CREATE TABLE users (
    name       TEXT PRIMARY KEY,
    roles      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    "user"      TEXT NOT NULL REFERENCES users(name),
    label       TEXT,
    secret_hash TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT,
    revoked_by  TEXT
);
-- Verdicts on deployments; one per person and deployment.
CREATE TABLE approvals (
    deployment BIGINT NOT NULL REFERENCES deployments(id),
    "by"       TEXT NOT NULL,
    approved   BOOLEAN NOT NULL,
    comment    TEXT NOT NULL,
    at         BIGINT NOT NULL,
    PRIMARY KEY (deployment, "by")
);
-- Reports attached to releases, parsed; the file itself is a blob.
CREATE TABLE evidence (
    id        BIGSERIAL PRIMARY KEY,
    version   TEXT NOT NULL REFERENCES releases(version),
    kind      TEXT NOT NULL,
    digest    TEXT NOT NULL,
    file_name TEXT NOT NULL,
    report    TEXT NOT NULL,
    added_at  BIGINT NOT NULL,
    added_by  TEXT NOT NULL
);
CREATE INDEX evidence_version ON evidence(version, id);
CREATE TRIGGER evidence_append_only BEFORE UPDATE ON evidence
FOR EACH ROW EXECUTE FUNCTION gantry_refuse('evidence is append-only');

-- Notifications: queued before they are sent; retried until delivered or given up.
CREATE TABLE deliveries (
    id         BIGSERIAL PRIMARY KEY,
    deployment BIGINT NOT NULL,
    channel    TEXT NOT NULL,
    notice     TEXT NOT NULL,
    status     TEXT NOT NULL,
    attempts   INTEGER NOT NULL,
    next_at    BIGINT NOT NULL,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX deliveries_due ON deliveries(status, next_at);
CREATE INDEX deliveries_deployment ON deliveries(deployment, id);

-- The controller epoch: one more at every controller start, on any
-- controller, sent to fleet hosts as a fencing token.
CREATE TABLE controller_epoch (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch BIGINT NOT NULL
);
"#,
    // Incidents: one per rollback, opened and restored with the transition
    // that records it; closed by a person with what was learned.
    r#"
CREATE TABLE incidents (
    id          BIGSERIAL PRIMARY KEY,
    deployment  BIGINT NOT NULL UNIQUE,
    env         TEXT NOT NULL,
    kind        TEXT NOT NULL,
    opened_at   BIGINT NOT NULL,
    release     TEXT,
    restored_to TEXT,
    reason      TEXT NOT NULL,
    restored_at BIGINT,
    closed_at   BIGINT,
    closed_by   TEXT,
    summary     TEXT,
    follow_up   TEXT
);
CREATE INDEX incidents_env ON incidents(env, id);
"#,
    // Leadership among the controllers that share this database (see
    // `lease.rs`): the lease, one row, taken and renewed on the database's
    // clock, its epoch drawn from `controller_epoch` and checked (FOR SHARE)
    // by every leader-only write; and each controller's heartbeat.
    r#"
CREATE TABLE leader_lease (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    holder      TEXT NOT NULL,
    api_url     TEXT NOT NULL,
    epoch       BIGINT NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
-- Present from the start, expired: taking the lease is always an UPDATE of
-- a row that exists, serialised by its row lock.
INSERT INTO leader_lease (id, holder, api_url, epoch, acquired_at, expires_at)
VALUES (1, '', '', 0, 'epoch', 'epoch');
CREATE TRIGGER leader_lease_kept BEFORE DELETE ON leader_lease
FOR EACH ROW EXECUTE FUNCTION gantry_refuse('the leader lease is never deleted');
CREATE TRIGGER leader_lease_no_truncate BEFORE TRUNCATE ON leader_lease
FOR EACH STATEMENT EXECUTE FUNCTION gantry_refuse('the leader lease is never deleted');
CREATE TRIGGER leader_lease_epoch_forward BEFORE UPDATE ON leader_lease
FOR EACH ROW WHEN (NEW.epoch < OLD.epoch)
EXECUTE FUNCTION gantry_refuse('the lease epoch never moves back');
CREATE TABLE controllers (
    id         TEXT PRIMARY KEY,
    api_url    TEXT NOT NULL,
    version    TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    last_seen  TIMESTAMPTZ NOT NULL
);
-- The epoch of the leader that recorded each event and log line (NULL:
-- recorded with no lease in force, by a tool or a test), so that what each
-- term wrote can be told apart.
ALTER TABLE events ADD COLUMN epoch BIGINT;
ALTER TABLE deployment_log ADD COLUMN epoch BIGINT;
"#,
    // Database migrations: those a release carries and those applied in
    // each environment and not backed out (see the SQLite store).
    r#"
ALTER TABLE releases ADD COLUMN migrations TEXT;
CREATE TABLE applied_migrations (
    env        TEXT NOT NULL,
    id         TEXT NOT NULL,
    kind       TEXT NOT NULL,
    version    TEXT NOT NULL,
    deployment BIGINT NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (env, id)
);
"#,
    // When a release's commit was made (DORA's lead time counts from it).
    r#"
ALTER TABLE releases ADD COLUMN committed_at BIGINT;
"#,
    // A deployment's change record closed by a person, with its evidence
    // (files among the blobs, named here).
    r#"
CREATE TABLE deployment_closures (
    deployment BIGINT PRIMARY KEY,
    status     TEXT NOT NULL,
    summary    TEXT NOT NULL,
    evidence   TEXT NOT NULL,
    closed_by  TEXT NOT NULL,
    closed_at  BIGINT NOT NULL
);
"#,
    // Artifacts every controller can read (`blobs.rs`): each blob
    // content-addressed, in 1 MiB chunks.
    r#"
CREATE TABLE blobs (
    digest TEXT PRIMARY KEY,
    size   BIGINT NOT NULL,
    chunks INTEGER NOT NULL
);
CREATE TABLE blob_chunks (
    digest TEXT NOT NULL REFERENCES blobs(digest),
    n      INTEGER NOT NULL,
    bytes  BYTEA NOT NULL,
    PRIMARY KEY (digest, n)
);
"#,
];
