-- A directory user's id at the identity provider (the token claim matched to it).
ALTER TABLE users ADD COLUMN external_id TEXT COLLATE "C" NOT NULL DEFAULT '';
CREATE UNIQUE INDEX users_external_id ON users(external_id) WHERE external_id <> '';
