-- roomcast schema, SQLite flavour. Keep in step with migrations/postgres/0001_init.sql: same
-- tables, columns and constraints; only the types differ (STRICT INTEGER/TEXT here).
-- Timestamps are unix milliseconds.

-- Accounts. `id` is chosen by the caller (the JWT `sub`); usernames are unique as written
-- (case-sensitive, like the PostgreSQL side).
CREATE TABLE users (
    id            TEXT    NOT NULL PRIMARY KEY,
    username      TEXT    NOT NULL UNIQUE,
    password_hash TEXT,
    created_at    INTEGER NOT NULL
) STRICT;

-- Refresh tokens by JWT id. A token is usable once: consuming it sets `used_at`, so a second
-- presentation (a stolen, replayed token) is detectable.
CREATE TABLE refresh_tokens (
    jti        TEXT    NOT NULL PRIMARY KEY,
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    used_at    INTEGER,
    revoked_at INTEGER
) STRICT;
CREATE INDEX refresh_tokens_user_id ON refresh_tokens (user_id);

-- Rooms. `last_seq` is the room's message counter: the writer bumps it with
-- `UPDATE ... RETURNING` in the transaction that inserts the message, which makes `seq`
-- gap-free and one sequence per room. A seed 003 room code is simply a room named by the code.
-- `created_by` and member `user_id`s have no foreign key: with ROOMCAST_USER_DIRECTORY=token
-- users have no row here.
CREATE TABLE rooms (
    id         INTEGER NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    private    INTEGER NOT NULL DEFAULT 0 CHECK (private IN (0, 1)),
    created_by TEXT,
    created_at INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE room_members (
    room_id  INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id  TEXT    NOT NULL,
    added_at INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
) STRICT;

-- Messages, keyed by (room, seq) so history pages are index range scans. `data` is JSON text.
CREATE TABLE messages (
    room_id       INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    seq           INTEGER NOT NULL,
    id            TEXT    NOT NULL UNIQUE,
    user_id       TEXT    NOT NULL,
    username      TEXT    NOT NULL,
    content       TEXT    NOT NULL,
    data          TEXT,
    client_msg_id TEXT,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (room_id, seq)
) STRICT;

-- Idempotency: one message per (room, sender, client key).
CREATE UNIQUE INDEX messages_client_msg_id
    ON messages (room_id, user_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;
