-- 007: live delivery without a table read.
--
-- Every notice the publisher sends can carry the whole message, so a subscriber
-- hands it over without asking Postgres. Two things make that exact:
--
-- 1. The chain. The ordering trigger records, under its lock, the id of the message
--    committed just before this statement's rows (`echo.messages_prev`, local to the
--    transaction). A notice carries that `prev`; a receiver that sees every notice of
--    the namespace knows, when `prev` equals its cursor, that nothing lies between.
--    Anything else (a gap, an unsigned or relayed notice) falls back to reading the
--    table, as before. The id must be read with a fresh snapshot: under REPEATABLE
--    READ or SERIALIZABLE the transaction's snapshot may predate the last commit, so
--    no `prev` is recorded there and those messages are announced without one.
-- 2. The key. Content that arrives over Redis is only believed when it is signed with
--    this namespace's key (HMAC-SHA256), which only a process that can read this
--    table holds. Anyone else who can PUBLISH on the Redis server can at most wake a
--    subscriber up, which makes it read the table: Postgres stays the record.

CREATE OR REPLACE FUNCTION messages_serialise() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- One lock per namespace (schema), taken before the sequence is touched.
    PERFORM pg_advisory_xact_lock(hashtextextended(TG_TABLE_SCHEMA || '.messages', 0));
    PERFORM set_config('echo.messages_prev',
        CASE WHEN current_setting('transaction_isolation') = 'read committed'
             THEN (SELECT coalesce(max(id), 0) FROM messages)::text ELSE '' END, true);
    RETURN NULL;
END $$;

CREATE TABLE bus_key (
    only_one boolean PRIMARY KEY DEFAULT true CHECK (only_one),
    key      text NOT NULL
);
-- gen_random_uuid() draws from the server's strong random source: 244 random bits.
INSERT INTO bus_key (key)
VALUES (replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));
