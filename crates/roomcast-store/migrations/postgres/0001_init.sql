-- roomcast schema, PostgreSQL flavour. Keep in step with migrations/sqlite/0001_init.sql: same
-- tables, columns and constraints; only the types differ. Tables are created unqualified, so
-- they land in the first schema of the connection's search_path (see StoreOptions::pg_schema).
-- Timestamps are unix milliseconds.

-- Accounts. `id` is chosen by the caller (the JWT `sub`); usernames are unique as written.
CREATE TABLE users (
    id            TEXT   NOT NULL PRIMARY KEY,
    username      TEXT   NOT NULL UNIQUE,
    password_hash TEXT,
    created_at    BIGINT NOT NULL
);

-- Refresh tokens by JWT id. A token is usable once: consuming it sets `used_at`, so a second
-- presentation (a stolen, replayed token) is detectable.
CREATE TABLE refresh_tokens (
    jti        TEXT   NOT NULL PRIMARY KEY,
    user_id    TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    used_at    BIGINT,
    revoked_at BIGINT
);
CREATE INDEX refresh_tokens_user_id ON refresh_tokens (user_id);

-- Rooms. `last_seq` is the room's message counter: the writer bumps it with
-- `UPDATE ... RETURNING` in the transaction that inserts the message. The row lock that UPDATE
-- takes is what keeps `seq` one gap-free sequence per room when several server processes share
-- this database. A seed 003 room code is simply a room named by the code. `created_by` and
-- member `user_id`s have no foreign key: with ROOMCAST_USER_DIRECTORY=token users have no row.
CREATE TABLE rooms (
    id         BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    private    BOOLEAN NOT NULL DEFAULT FALSE,
    created_by TEXT,
    created_at BIGINT  NOT NULL,
    last_seq   BIGINT  NOT NULL DEFAULT 0
);

CREATE TABLE room_members (
    room_id  BIGINT NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id  TEXT   NOT NULL,
    added_at BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

-- Messages, keyed by (room, seq) so history pages are index range scans. `data` is JSON text.
CREATE TABLE messages (
    room_id       BIGINT NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    seq           BIGINT NOT NULL,
    id            TEXT   NOT NULL UNIQUE,
    user_id       TEXT   NOT NULL,
    username      TEXT   NOT NULL,
    content       TEXT   NOT NULL,
    data          TEXT,
    client_msg_id TEXT,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (room_id, seq)
);

-- Idempotency: one message per (room, sender, client key).
CREATE UNIQUE INDEX messages_client_msg_id
    ON messages (room_id, user_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;
