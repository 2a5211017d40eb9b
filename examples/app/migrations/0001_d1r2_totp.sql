-- The replay store of the backup endpoint (src/lib/server/verify.ts): the highest TOTP counter
-- (period number) accepted, in one row, so each code is accepted once.
CREATE TABLE d1r2_totp (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  last_counter INTEGER NOT NULL
);
