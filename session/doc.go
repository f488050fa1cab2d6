// Package session provides shared-store HTTP sessions built on scs with
// secure defaults: Redis (plain, Sentinel or Cluster) and PostgreSQL stores,
// no lost updates when concurrent requests of one session change different
// keys, 503 with Retry-After instead of an error loop when the store is down,
// and a carrier for the database router's read-your-writes token.
//
// This package is being built; see the project README for the roadmap.
package session
