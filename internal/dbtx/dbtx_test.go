package dbtx_test

import (
	"github.com/condaccess/condaccess/internal/dbtx"
	"github.com/condaccess/condaccess/internal/sqlitedb"
)

// Both backends' transactions satisfy Tx (pgdb asserts its own in pgdb.go).
var _ dbtx.Tx = (*sqlitedb.Tx)(nil)
