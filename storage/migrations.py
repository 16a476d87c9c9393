"""Versioned schema migrations of the state database.

Each migration is applied once, in order, inside one transaction, and recorded in `schema_version`.
Never edit a migration that has shipped: add the next one. docs/DB_schema.md describes the tables.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "nodes, tasks, attempts and the append-only event log",
        """
        CREATE TABLE nodes (
            node_id TEXT PRIMARY KEY,
            status TEXT NOT NULL,
            hostname TEXT NOT NULL,
            pid INTEGER NOT NULL,
            version TEXT NOT NULL,
            skills TEXT NOT NULL,
            labels TEXT NOT NULL,
            capacity INTEGER NOT NULL,
            running INTEGER NOT NULL,
            cpu_percent REAL NOT NULL DEFAULT 0,
            memory_percent REAL NOT NULL DEFAULT 0,
            rss_mb REAL NOT NULL DEFAULT 0,
            load1 REAL NOT NULL DEFAULT 0,
            heartbeat_interval_s REAL NOT NULL,
            started_at REAL NOT NULL,
            last_seen REAL NOT NULL
        );

        CREATE TABLE tasks (
            task_id TEXT PRIMARY KEY,
            skill TEXT NOT NULL,
            priority TEXT NOT NULL,
            state TEXT NOT NULL,
            input TEXT NOT NULL,
            idempotency_key TEXT UNIQUE,
            attempts INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL,
            timeout_s REAL NOT NULL,
            attempt_offset INTEGER NOT NULL DEFAULT 0,
            submitter TEXT,
            node_id TEXT,
            created_at REAL NOT NULL,
            queued_at REAL,
            started_at REAL,
            finished_at REAL,
            updated_at REAL NOT NULL,
            result TEXT,
            error_type TEXT,
            error_message TEXT,
            error_traceback TEXT,
            trace_id TEXT,
            stream_seq INTEGER
        );
        -- `task list --status S` newest first, and the start-up load of unfinished tasks.
        CREATE INDEX tasks_state ON tasks (state, task_id);
        -- `task list --skill S` newest first.
        CREATE INDEX tasks_skill ON tasks (skill, task_id);

        CREATE TABLE task_attempts (
            task_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            node_id TEXT,
            state TEXT NOT NULL,
            started_at REAL,
            finished_at REAL,
            error_type TEXT,
            error_message TEXT,
            error_traceback TEXT,
            PRIMARY KEY (task_id, attempt)
        ) WITHOUT ROWID;

        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            -- Set for events reported by workers: a redelivered event is recorded once.
            event_id TEXT UNIQUE,
            task_id TEXT NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 0,
            kind TEXT NOT NULL,
            from_state TEXT,
            to_state TEXT,
            node_id TEXT,
            at REAL NOT NULL,
            data TEXT
        );
        CREATE INDEX events_task ON events (task_id, id);

        CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
        CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
        """,
    ),
    (
        2,
        "retries: next attempt time, backoff and fencing per task; the ack subject of each attempt",
        """
        ALTER TABLE tasks ADD COLUMN next_attempt_at REAL;
        ALTER TABLE tasks ADD COLUMN backoff TEXT;
        -- Attempts up to this number were declared lost: their late reports are ignored.
        ALTER TABLE tasks ADD COLUMN fenced_through INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE task_attempts ADD COLUMN ack_subject TEXT;
        """,
    ),
    (
        3,
        "skill registry, approvals, and the hash chain of the event log",
        """
        CREATE TABLE skills (
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            manifest TEXT NOT NULL,
            checksum TEXT NOT NULL,
            source TEXT NOT NULL,
            enabled INTEGER NOT NULL DEFAULT 1,
            archive TEXT,
            installed_at REAL NOT NULL,
            PRIMARY KEY (name, version)
        );

        CREATE TABLE approvals (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            task_id TEXT NOT NULL,
            approver TEXT NOT NULL,
            decision TEXT NOT NULL,
            note TEXT,
            at REAL NOT NULL
        );
        CREATE INDEX approvals_task ON approvals (task_id, id);

        ALTER TABLE tasks ADD COLUMN risk TEXT;
        ALTER TABLE tasks ADD COLUMN guard_rule TEXT;
        ALTER TABLE tasks ADD COLUMN approvals_needed INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE tasks ADD COLUMN held_until REAL;

        -- Each event's hash covers its content and the previous event's hash (see storage/audit.py).
        ALTER TABLE events ADD COLUMN prev_hash TEXT;
        ALTER TABLE events ADD COLUMN hash TEXT;
        """,
    ),
    (
        4,
        "the trace context of each task, and artifacts",
        """
        -- The W3C traceparent of the task's coordinator span: re-runs continue the same trace.
        ALTER TABLE tasks ADD COLUMN traceparent TEXT;

        CREATE TABLE artifacts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            task_id TEXT NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 0,
            name TEXT NOT NULL,
            size INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            content_type TEXT NOT NULL,
            backend TEXT NOT NULL,
            key TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL
        );
        CREATE INDEX artifacts_task ON artifacts (task_id, name);
        CREATE INDEX artifacts_sha ON artifacts (sha256);
        CREATE INDEX artifacts_expiry ON artifacts (expires_at);
        """,
    ),
    (
        5,
        "an index on when tasks finished, for the window statistics of `claw status` and the alerts",
        """
        -- The window queries read a range of finished_at and only state and started_at besides: this
        -- index alone answers them, without visiting the table's rows (inputs, results, tracebacks).
        CREATE INDEX tasks_finished ON tasks (finished_at, state, started_at);
        """,
    ),
    (
        6,
        "the desired state of worker nodes (claw node pause, drain, resume)",
        """
        CREATE TABLE node_controls (
            node_id TEXT PRIMARY KEY,
            control TEXT NOT NULL,
            changed_at REAL NOT NULL,
            changed_by TEXT
        ) WITHOUT ROWID;
        """,
    ),
    (
        7,
        "the quarantine: task events the coordinator could not decode or fold",
        """
        CREATE TABLE quarantine (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            subject TEXT NOT NULL,
            -- The event's sequence in <PREFIX>_EVENTS: a redelivered event is recorded once.
            stream_seq INTEGER UNIQUE,
            task_id TEXT,
            kind TEXT,
            reason TEXT NOT NULL,
            size INTEGER NOT NULL,
            -- The first bytes of the message (storage/quarantine_store.py: KEEP_BYTES).
            data BLOB NOT NULL
        );
        CREATE INDEX quarantine_task ON quarantine (task_id, id);
        """,
    ),
    (
        8,
        "trust-audit: the sha256 of each installed skill's archive, which workers check before loading it",
        """
        -- Computed by the coordinator from the skill-code store at install; NULL for skills installed
        -- before (workers then check the unpacked files' checksum only) and for built-ins.
        ALTER TABLE skills ADD COLUMN archive_sha256 TEXT;
        """,
    ),
    (
        9,
        "the tenant of each task (quotas, fair share, usage by tenant)",
        """
        ALTER TABLE tasks ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
        -- `claw task list --tenant` pages newest first within one tenant.
        CREATE INDEX tasks_tenant ON tasks (tenant, task_id);
        """,
    ),
    (
        10,
        "flow control: limits by key, a task's own limit keys, usage by tenant, skill, model and hour",
        """
        -- Set by `claw limits set` (config limits are applied at start and stored here too).
        CREATE TABLE flow_limits (
            key TEXT PRIMARY KEY,
            spec TEXT NOT NULL,
            updated_at REAL NOT NULL
        ) WITHOUT ROWID;
        -- The limit keys a task adds to its skill's (`claw submit --limit-key`), as JSON.
        ALTER TABLE tasks ADD COLUMN flow TEXT;
        -- Usage accounting (`claw usage`): one row per tenant, skill, model and hour.
        CREATE TABLE flow_usage (
            hour INTEGER NOT NULL,
            tenant TEXT NOT NULL,
            skill TEXT NOT NULL,
            model TEXT NOT NULL,
            calls INTEGER NOT NULL DEFAULT 0,
            errors TEXT NOT NULL DEFAULT '{}',
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            cache_hits INTEGER NOT NULL DEFAULT 0,
            cost REAL NOT NULL DEFAULT 0,
            PRIMARY KEY (hour, tenant, skill, model)
        ) WITHOUT ROWID;
        """,
    ),
    (
        11,
        "workflows: registered versions, runs and node runs (coordinator/workflows), and the memo cache",
        """
        CREATE TABLE workflows (
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            spec TEXT NOT NULL,
            digest TEXT NOT NULL,
            registered_at REAL NOT NULL,
            registered_by TEXT,
            PRIMARY KEY (name, version)
        ) WITHOUT ROWID;

        CREATE TABLE workflow_runs (
            run_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            state TEXT NOT NULL,
            input TEXT NOT NULL,
            trigger TEXT,
            submitter TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            finished_at REAL,
            error TEXT,
            rerun_of TEXT,
            from_node TEXT,
            trace_id TEXT,
            traceparent TEXT,
            -- A random secret in the node task ids: nobody can submit a task under a node's id first.
            salt TEXT NOT NULL
        ) WITHOUT ROWID;
        -- The start-up load of unfinished runs, and `claw workflow list` newest first.
        CREATE INDEX workflow_runs_state ON workflow_runs (state, run_id);
        CREATE INDEX workflow_runs_created ON workflow_runs (created_at);

        CREATE TABLE workflow_nodes (
            run_id TEXT NOT NULL,
            node TEXT NOT NULL,
            state TEXT NOT NULL,
            -- JSON list: the node's task (or one per item of a fan-out), possibly another run's (reused).
            task_ids TEXT NOT NULL DEFAULT '[]',
            items INTEGER,
            source TEXT NOT NULL DEFAULT 'run',
            started_at REAL,
            finished_at REAL,
            error TEXT,
            PRIMARY KEY (run_id, node)
        ) WITHOUT ROWID;

        -- `cache: true` nodes: (skill@version, input digest) -> the task that succeeded with it.
        CREATE TABLE workflow_cache (
            cache_key TEXT PRIMARY KEY,
            task_id TEXT NOT NULL,
            at REAL NOT NULL
        ) WITHOUT ROWID;
        """,
    ),
    (
        12,
        "schedules and their fires (claw schedules; coordinator/schedules/)",
        """
        CREATE TABLE schedules (
            name TEXT PRIMARY KEY,
            -- The definition as created (common/api.py ScheduleCreateRequest, JSON).
            definition BLOB NOT NULL,
            kind TEXT NOT NULL,
            paused INTEGER NOT NULL DEFAULT 0,
            -- Interval fire times are anchor_at + k * every_s: the same on every coordinator.
            anchor_at REAL NOT NULL,
            next_fire_at REAL,
            last_fire_at REAL,
            last_fire_id TEXT,
            -- Artifact triggers: the id of the last artifacts row looked at.
            artifact_cursor INTEGER NOT NULL DEFAULT 0,
            fires INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            created_by TEXT,
            updated_at REAL NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE schedule_fires (
            -- schedule:<name>:<fire time> (or :event-<id>, :subject-<seq>, :artifact-<id>, :manual-<key>).
            fire_id TEXT PRIMARY KEY,
            schedule TEXT NOT NULL,
            fire_time REAL,
            fired_at REAL NOT NULL,
            reason TEXT NOT NULL,
            target_id TEXT,
            error TEXT
        ) WITHOUT ROWID;
        CREATE INDEX schedule_fires_by_schedule ON schedule_fires (schedule, fired_at);
        """,
    ),
    # standby: the number of the last commit, shipped to the <PREFIX>_REPL stream (storage/replication.py).
    (
        13,
        "replication: commit number",
        """
        CREATE TABLE replication (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            commit_no INTEGER NOT NULL
        );
        INSERT INTO replication (id, commit_no) VALUES (1, 0);
        """,
    ),
    (
        14,
        "workflow runs belong to a tenant: their node tasks are that tenant's (coordinator/workflows)",
        """
        ALTER TABLE workflow_runs ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
        """,
    ),
    # trustrest (issue 11): who caused a fire - a trigger message's publisher (bound to its
    # credentials), the identity that fired by hand; NULL for time fires and older rows.
    (
        15,
        "schedule fires record who fired them",
        """
        ALTER TABLE schedule_fires ADD COLUMN fired_by TEXT;
        """,
    ),
]

LATEST_VERSION = MIGRATIONS[-1][0]
