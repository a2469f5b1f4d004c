//! The schema, as migrations applied in order; `PRAGMA user_version` counts
//! how many ran. Kept in one place so the order is plain to see.

/// Migrations, applied in order; `PRAGMA user_version` counts how many ran.
/// The migration that rewrites stored strategies: the upgrade tests build a
/// database of the version before it.
#[cfg(test)]
pub(super) const STRATEGY_REWRITE: usize = 6;

pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE releases (
    version       TEXT PRIMARY KEY,
    digest        TEXT NOT NULL,
    size          INTEGER NOT NULL,
    artifact_kind TEXT NOT NULL,
    git_sha       TEXT,
    signature     TEXT,
    signed_by     TEXT,
    created_at    INTEGER NOT NULL,
    created_by    TEXT NOT NULL
);
CREATE TABLE deployments (
    id          INTEGER PRIMARY KEY,
    env         TEXT NOT NULL,
    version     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    phase       TEXT NOT NULL,
    active      INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    finished_at INTEGER,
    state       TEXT NOT NULL
);
-- At most one deployment in progress per environment.
CREATE UNIQUE INDEX deployments_one_active ON deployments(env) WHERE active = 1;
CREATE INDEX deployments_env ON deployments(env, id);
CREATE TABLE events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment INTEGER NOT NULL REFERENCES deployments(id),
    at         INTEGER NOT NULL,
    event      TEXT NOT NULL
);
CREATE INDEX events_deployment ON events(deployment, seq);
CREATE TABLE deployment_log (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment INTEGER NOT NULL REFERENCES deployments(id),
    at         INTEGER NOT NULL,
    phase      TEXT NOT NULL,
    message    TEXT NOT NULL
);
CREATE INDEX deployment_log_deployment ON deployment_log(deployment, seq);
CREATE TABLE env_state (
    env        TEXT PRIMARY KEY,
    version    TEXT NOT NULL,
    instances  TEXT NOT NULL,
    deployment INTEGER NOT NULL REFERENCES deployments(id),
    since      INTEGER NOT NULL
);
"#,
    r#"
-- The audit trail: append-only, each record chained to the one before by SHA-256.
CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    subject   TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE TRIGGER audit_append_only BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
-- The last pruned record, which the first kept one links to.
CREATE TABLE audit_anchor (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);
"#,
    r#"
-- People, their roles, and their API tokens (only a SHA-256 of each secret is kept).
CREATE TABLE users (
    name       TEXT PRIMARY KEY,
    roles      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL
);
CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    user        TEXT NOT NULL REFERENCES users(name),
    label       TEXT,
    secret_hash TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    created_by  TEXT NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER,
    revoked_by  TEXT
);
-- Verdicts on deployments; one per person and deployment.
CREATE TABLE approvals (
    deployment INTEGER NOT NULL REFERENCES deployments(id),
    by         TEXT NOT NULL,
    approved   INTEGER NOT NULL,
    comment    TEXT NOT NULL,
    at         INTEGER NOT NULL,
    PRIMARY KEY (deployment, by)
);
-- Reports attached to releases, parsed; the file itself is a blob.
CREATE TABLE evidence (
    id        INTEGER PRIMARY KEY,
    version   TEXT NOT NULL REFERENCES releases(version),
    kind      TEXT NOT NULL,
    digest    TEXT NOT NULL,
    file_name TEXT NOT NULL,
    report    TEXT NOT NULL,
    added_at  INTEGER NOT NULL,
    added_by  TEXT NOT NULL
);
CREATE INDEX evidence_version ON evidence(version, id);
CREATE TRIGGER evidence_append_only BEFORE UPDATE ON evidence
BEGIN SELECT RAISE(ABORT, 'evidence is append-only'); END;
"#,
    r#"
-- Notifications: queued before they are sent; retried until delivered or given up.
CREATE TABLE deliveries (
    id         INTEGER PRIMARY KEY,
    deployment INTEGER NOT NULL,
    channel    TEXT NOT NULL,
    notice     TEXT NOT NULL,
    status     TEXT NOT NULL,
    attempts   INTEGER NOT NULL,
    next_at    INTEGER NOT NULL,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX deliveries_due ON deliveries(status, next_at);
CREATE INDEX deliveries_deployment ON deliveries(deployment, id);
"#,
    r#"
-- The audit chain's head: the last sequence number handed out and its hash.
-- It only moves forward, so a record removed behind the store's back leaves
-- a gap at the end that `verify` names, and no sequence number is reused.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
SELECT 1, seq, hash FROM (
    SELECT seq, hash FROM audit
    UNION ALL SELECT seq, hash FROM audit_anchor
    UNION ALL SELECT 0, '0000000000000000000000000000000000000000000000000000000000000000'
) ORDER BY seq DESC LIMIT 1;
CREATE TRIGGER audit_head_forward BEFORE UPDATE ON audit_head WHEN NEW.seq <= OLD.seq
BEGIN SELECT RAISE(ABORT, 'the audit head only moves forward'); END;
CREATE TRIGGER audit_head_kept BEFORE DELETE ON audit_head
BEGIN SELECT RAISE(ABORT, 'the audit head is never deleted'); END;
-- Records are appended past the head only.
CREATE TRIGGER audit_append_past_head BEFORE INSERT ON audit
WHEN NEW.seq <= (SELECT seq FROM audit_head WHERE id = 1)
BEGIN SELECT RAISE(ABORT, 'audit sequence numbers are never reused'); END;
-- Records are deleted only at or below the anchor, which only the prune path
-- moves (and it appends a record naming the new anchor first).
CREATE TRIGGER audit_delete_below_anchor BEFORE DELETE ON audit
WHEN OLD.seq > COALESCE((SELECT seq FROM audit_anchor WHERE id = 1), 0)
BEGIN SELECT RAISE(ABORT, 'audit records are append-only: only pruning drops them, up to the anchor it records'); END;
-- The anchor only moves forward, onto a kept record with that very hash.
CREATE TRIGGER audit_anchor_on_record BEFORE INSERT ON audit_anchor
WHEN NOT EXISTS (SELECT 1 FROM audit WHERE seq = NEW.seq AND hash = NEW.hash)
BEGIN SELECT RAISE(ABORT, 'the audit anchor must be a kept record'); END;
CREATE TRIGGER audit_anchor_forward BEFORE UPDATE ON audit_anchor
WHEN NEW.seq <= OLD.seq OR NOT EXISTS (SELECT 1 FROM audit WHERE seq = NEW.seq AND hash = NEW.hash)
BEGIN SELECT RAISE(ABORT, 'the audit anchor only moves forward, onto a kept record'); END;
CREATE TRIGGER audit_anchor_kept BEFORE DELETE ON audit_anchor
BEGIN SELECT RAISE(ABORT, 'the audit anchor is never deleted'); END;
-- Signed checkpoints of the head (the key is outside the database).
CREATE TABLE audit_checkpoints (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    seq         INTEGER NOT NULL,
    hash        TEXT NOT NULL,
    anchor_seq  INTEGER NOT NULL,
    anchor_hash TEXT NOT NULL,
    at          INTEGER NOT NULL,
    public_key  TEXT NOT NULL,
    signature   TEXT NOT NULL
);
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
CREATE TRIGGER audit_checkpoints_below_anchor BEFORE DELETE ON audit_checkpoints
WHEN OLD.seq > COALESCE((SELECT seq FROM audit_anchor WHERE id = 1), 0)
BEGIN SELECT RAISE(ABORT, 'audit checkpoints are dropped only with the records they name'); END;
"#,
    // The controller's epoch: one more at every start, sent to fleet hosts in
    // `Hello` as a fencing token (a host refuses a lower one).
    r#"
CREATE TABLE controller_epoch (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL
);
"#,
    // The upgrade tests replay this one (`STRATEGY_REWRITE`) and those after it.
    r#"
-- A deployment's strategy is one tagged value, `settings.strategy` (`kind`:
-- blue-green, canary or rolling, beside that strategy's own settings), where
-- earlier versions kept two optional ones, `settings.canary` and
-- `settings.rolling`. Rows they wrote, finished or in flight, are rewritten
-- once here, so the deployment type knows one shape only.
UPDATE deployments SET state = json_set(
    json_remove(state, '$.settings.canary', '$.settings.rolling'),
    '$.settings.strategy',
    CASE
        WHEN json_type(state, '$.settings.canary') = 'object'
            THEN json_set(json_extract(state, '$.settings.canary'), '$.kind', 'canary')
        WHEN json_type(state, '$.settings.rolling') = 'object'
            THEN json_set(json_extract(state, '$.settings.rolling'), '$.kind', 'rolling')
        ELSE json_object('kind', 'blue-green')
    END
)
WHERE json_type(state, '$.settings.strategy') IS NULL;
"#,
    // Incidents: one per rollback, opened and restored with the transition
    // that records it; closed by a person with what was learned.
    r#"
CREATE TABLE incidents (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment  INTEGER NOT NULL UNIQUE,
    env         TEXT NOT NULL,
    kind        TEXT NOT NULL,
    opened_at   INTEGER NOT NULL,
    release     TEXT,
    restored_to TEXT,
    reason      TEXT NOT NULL,
    restored_at INTEGER,
    closed_at   INTEGER,
    closed_by   TEXT,
    summary     TEXT,
    follow_up   TEXT
);
CREATE INDEX incidents_env ON incidents(env, id);
"#,
    // Database migrations: those a release carries (JSON, read from its
    // artifact at registration) and those applied in each environment and
    // not backed out (written with the transition that applied them).
    r#"
ALTER TABLE releases ADD COLUMN migrations TEXT;
CREATE TABLE applied_migrations (
    env        TEXT NOT NULL,
    id         TEXT NOT NULL,
    kind       TEXT NOT NULL,
    version    TEXT NOT NULL,
    deployment INTEGER NOT NULL,
    applied_at INTEGER NOT NULL,
    PRIMARY KEY (env, id)
);
"#,
    // When a release's commit was made (DORA's lead time counts from it).
    r#"
ALTER TABLE releases ADD COLUMN committed_at INTEGER;
"#,
    // A deployment's change record closed by a person, with its evidence
    // (files among the blobs, named here).
    r#"
CREATE TABLE deployment_closures (
    deployment INTEGER PRIMARY KEY,
    status     TEXT NOT NULL,
    summary    TEXT NOT NULL,
    evidence   TEXT NOT NULL,
    closed_by  TEXT NOT NULL,
    closed_at  INTEGER NOT NULL
);
"#,
];
