-- Signed-out console sessions (sealed cookies), refused by every replica until they
-- would have expired; expired rows are deleted by the next sign-out.
CREATE TABLE console_signouts (id TEXT COLLATE "C" PRIMARY KEY, expires_unix BIGINT NOT NULL);
CREATE INDEX console_signouts_expires ON console_signouts(expires_unix);
