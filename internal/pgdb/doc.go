package pgdb

// Porting a service's store to PostgreSQL (riskstore/postgres.go is the worked example):
//
//  1. Migrations: eventlog.PGMigrations(table) first (as the SQLite store puts
//     eventlog.Migrations first), then the store's own files from a pgmigrations/
//     folder (the SQLite schema as migrated today, in PostgreSQL types: BIGINT for
//     nanoseconds and revisions, BYTEA for blobs, TEXT COLLATE "C" for keys that
//     listings order or page by, so the order matches SQLite's), then
//     audit.PGMigrations(""), and lease.PGMigrations() for a service with a consumer.
//     Append only, like the SQLite ones.
//  2. OpenPG: pgdb.Open with the service's schema (its name: "risk", "compliance",
//     ...), eventlog.NewPG, audit.NewPGWriter (to append) and audit.NewPG (the
//     store's Audit method, which AuditService lists and retention compacts).
//  3. Update: db.Write, and first log.Next(tx): it locks the log's counter row, so
//     Updates from every replica run one at a time and read-then-write logic stays
//     as safe as on the one SQLite writer. Keep no write-path cache: another
//     replica may have changed the rows (the SQLite stores' caches rely on being the
//     only writer).
//  4. SQL: $1 placeholders; `IN (?, ?, ...)` lists become `= ANY($1)` with a
//     []string; SQLite's `INDEXED BY` goes; ON CONFLICT works as is. A failed
//     statement aborts the transaction, so fn must return its error.
//  5. Consumers (risk→compliance, compliance→access, remediation): run under
//     lease.PG.Run and call Fence(ctx, tx, token) in every transaction that advances
//     a cursor.
//  6. Tests: TestMain(m) { os.Exit(pgtest.Main(m)) } and
//     storetest.Run(t, func(t) { return OpenPG(pgtest.URL(t)) }); the Factory gains
//     SupportsPostgres() (suite.PostgresReady) and opens OpenPG when
//     env.DatabaseURL is set (serve then stops refusing the service).
