// Package dbrouter routes PostgreSQL work across a primary and its streaming
// replicas with pgx: writes go to the primary, reads go to a replica that is
// fresh enough for the caller (read-your-writes across instances through a
// commit LSN token), and writes interrupted by a failover wait for the new
// primary and are retried only where nothing can have been applied.
//
// This package is being built; see the project README for the roadmap.
package dbrouter
