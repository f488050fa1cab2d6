// Package dbrouter routes PostgreSQL work across a primary and its streaming
// replicas, on pgx: writes go to the primary, reads go to replicas that are
// fresh enough for the caller, and both keep going through a failover.
//
// # Routing
//
// [New] takes the connection strings of every node and finds out by
// itself which one is the primary: a prober per node asks
// pg_is_in_recovery(), the WAL position, the timeline and the replication
// lag every Config.ProbeInterval (500ms), and every Config.FastProbeInterval
// (10ms) while no primary is known or after any connection error.
// [Router.Write] runs a transaction on the primary; [Router.Read] runs a
// function on a replica whose lag is within Config.MaxLag, balancing by the
// power of two choices, and on the primary when no replica qualifies.
// [Router.Exec], [Router.Query] and [Router.QueryRow] do the same for one
// statement, routed by which method is called, never by parsing SQL.
// [Router.Primary] and [Router.Replica] give the raw pools.
//
// # Read your writes, across instances
//
// Every Write learns its commit LSN. A context made with [WithMinLSN]
// collects the commit LSNs of the writes made with it, and Reads with it use
// only replicas that have replayed that far (waiting up to
// Config.ReplicaWait, 50ms, for one), else the primary. The position is a
// short string ([LSN.String], [ParseLSN]): put it in the session or a
// cookie and the user's next request, on any instance, sees their writes.
//
//	ctx = dbrouter.WithMinLSN(ctx, lsnFromSession)
//	router.Write(ctx, placeOrder)                 // raises the position
//	session.Put("lsn", dbrouter.MinLSN(ctx).String())
//
// # Failover
//
// While there is no primary, Writes wait for one (up to
// Config.FailoverTimeout, 30s, and never past their context) and go the
// moment a prober sees the promoted node. A transaction interrupted before
// COMMIT is run again there, as is one PostgreSQL asks to retry
// (serialization failure, deadlock). A transaction whose connection was
// lost during COMMIT is looked up on the new primary (pg_xact_status,
// guarded by the point where the node's history began) and either counts
// as done, is run again, or ends in [ErrCommitUnknown]: never applied twice.
// A hung node is found by its probe timing out; the work running there is
// cut and retried elsewhere. When two nodes are writable (a split brain),
// writes go only to the one on the higher timeline and the other is
// fenced: no reads, no writes, an error in the log.
//
// # Observability
//
// The router logs role changes, failovers and fencing through
// Config.Logger, reports every node with [Router.Status], and is a
// prometheus.Collector: register it to export per-node role, lag, LSN and
// pool gauges and counters of retries, failovers and commit resolutions.
//
// See docs/dbrouter.md in the repository for the guarantees in detail and
// for tuning.
package dbrouter
