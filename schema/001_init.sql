-- 001: the first schema. Times are Unix milliseconds (UTC).
-- Ids use AUTOINCREMENT so that a deleted id is never handed out again: the
-- vector index and clients may still hold it.

CREATE TABLE images (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	sha256      TEXT    NOT NULL UNIQUE CHECK (length(sha256) = 64),
	filename    TEXT,
	mime        TEXT    NOT NULL,
	width       INTEGER NOT NULL DEFAULT 0,
	height      INTEGER NOT NULL DEFAULT 0,
	bytes       INTEGER NOT NULL CHECK (bytes >= 0),
	meta        TEXT    NOT NULL DEFAULT '{}' CHECK (CASE WHEN json_valid(meta) THEN json_type(meta) = 'object' ELSE 0 END),
	status      INTEGER NOT NULL DEFAULT 0 CHECK (status IN (0, 1, 2)), -- pending, ready, failed
	error       TEXT,
	created_ms  INTEGER NOT NULL,
	updated_ms  INTEGER NOT NULL
);

CREATE TABLE texts (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	text        TEXT    NOT NULL,
	meta        TEXT    NOT NULL DEFAULT '{}' CHECK (CASE WHEN json_valid(meta) THEN json_type(meta) = 'object' ELSE 0 END),
	status      INTEGER NOT NULL DEFAULT 0 CHECK (status IN (0, 1, 2)),
	error       TEXT,
	created_ms  INTEGER NOT NULL
);

-- One store-wide sequence: every embedding write and every removal takes the
-- next value, so an index snapshot knows exactly which changes it lacks.
CREATE TABLE seq (
	id    INTEGER PRIMARY KEY CHECK (id = 1),
	last  INTEGER NOT NULL
);
INSERT INTO seq (id, last) VALUES (1, 0);

-- kind: 0 image, 1 text (no foreign key can point at two tables; the store
-- deletes embeddings with their item in one transaction).
CREATE TABLE embeddings (
	kind     INTEGER NOT NULL CHECK (kind IN (0, 1)),
	item_id  INTEGER NOT NULL,
	model    TEXT    NOT NULL,
	dim      INTEGER NOT NULL CHECK (dim > 0),
	vec      BLOB    NOT NULL CHECK (length(vec) = 4 * dim),
	seq      INTEGER NOT NULL UNIQUE,
	PRIMARY KEY (kind, item_id, model)
) WITHOUT ROWID;
CREATE INDEX embeddings_by_seq ON embeddings (kind, model, seq);

-- Removed embeddings, so that a snapshot taken before a delete drops it.
CREATE TABLE removals (
	kind     INTEGER NOT NULL CHECK (kind IN (0, 1)),
	item_id  INTEGER NOT NULL,
	seq      INTEGER NOT NULL UNIQUE,
	PRIMARY KEY (kind, item_id)
) WITHOUT ROWID;
CREATE INDEX removals_by_seq ON removals (kind, seq);

CREATE TABLE jobs (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	kind        TEXT    NOT NULL,
	state       INTEGER NOT NULL DEFAULT 0 CHECK (state IN (0, 1, 2)), -- queued, running, done
	total       INTEGER NOT NULL DEFAULT 0,
	done        INTEGER NOT NULL DEFAULT 0,
	failed      INTEGER NOT NULL DEFAULT 0,
	created_ms  INTEGER NOT NULL,
	updated_ms  INTEGER NOT NULL
);

CREATE TABLE job_items (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	job_id      INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
	kind        INTEGER NOT NULL CHECK (kind IN (0, 1)),
	item_id     INTEGER NOT NULL,
	state       INTEGER NOT NULL DEFAULT 0 CHECK (state IN (0, 1, 2, 3)), -- queued, claimed, done, failed
	attempts    INTEGER NOT NULL DEFAULT 0,
	error       TEXT,
	updated_ms  INTEGER NOT NULL
);
CREATE INDEX job_items_queue ON job_items (state, kind, id);
CREATE INDEX job_items_by_job ON job_items (job_id, state);
CREATE INDEX job_items_by_item ON job_items (kind, item_id);

-- The identity of the model the data was built with, and other settings.
CREATE TABLE kv (
	key    TEXT PRIMARY KEY,
	value  TEXT NOT NULL
) WITHOUT ROWID;
