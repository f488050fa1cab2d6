package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hakit.dev/lint"
)

// The rolling deploy v1 → v2 of a schema change on 1 M rows under load:
// the safe way fails no request and stalls writes less than the naive way,
// whose plain CREATE INDEX and SET NOT NULL hold the writers.
func TestSchemaRollingDeploy(t *testing.T) {
	if testing.Short() {
		t.Skip("a rolling deploy on 1 M rows: not with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	// The backfill in fewer, less paced batches than the benchmark's:
	// the test checks failed requests and lock waits, not the stall, and
	// must stay short.
	safe, err := runSchemaDeploy(ctx, schemaDeploy{Rows: 1_000_000, BackfillBatch: 10_000, BackfillPause: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("safe: %d requests, %d failed, longest write %v (median %v), longest read %v, start-up migrations %v, phases %v",
		safe.Requests, safe.Failed, safe.MaxWrite, safe.MedianWrite, safe.MaxRead, safe.Migrate, safe.Phases)
	if safe.Failed != 0 {
		t.Errorf("safe deploy: %d of %d requests failed: %q", safe.Failed, safe.Requests, safe.FailedSamples)
	}
	naive, err := runSchemaDeploy(ctx, schemaDeploy{Rows: 1_000_000, Naive: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("naive: %d requests, %d failed (%q), longest write %v (median %v), longest read %v, start-up migrations %v, phases %v",
		naive.Requests, naive.Failed, naive.FailedSamples, naive.MaxWrite, naive.MedianWrite, naive.MaxRead, naive.Migrate, naive.Phases)
	if naive.MaxWrite <= safe.MaxWrite {
		t.Errorf("the naive deploy's longest write (%v) is not longer than the safe one's (%v)", naive.MaxWrite, safe.MaxWrite)
	}
	// Whatever the machine's noise, the naive change holds the writers on
	// the table's lock for its whole index build: about a second on 1 M
	// rows on a quiet 2-core machine, more when loaded. The safe one's
	// writers wait only while a short DDL holds its lock.
	t.Logf("writers' lock waits on items (≥ 50 ms): safe %d, longest %v; naive %d, longest %v",
		safe.LockWaits, safe.MaxLockWait, naive.LockWaits, naive.MaxLockWait)
	if naive.LockWaits == 0 || naive.MaxLockWait < 200*time.Millisecond {
		t.Errorf("the naive deploy's writers waited %d times, at most %v, for the table's lock; want the length of a plain CREATE INDEX on 1 M rows",
			naive.LockWaits, naive.MaxLockWait)
	}
	if safe.MaxLockWait >= naive.MaxLockWait {
		t.Errorf("the safe deploy's writers waited up to %v for the table's lock, no less than the naive one's %v", safe.MaxLockWait, naive.MaxLockWait)
	}
}

// The safe deploy's migrations pass the linter; the naive one's do not.
func TestSchemaMigrationsLint(t *testing.T) {
	findings, err := lint.Dir(schemaMigrations(10, true, false))
	if err != nil || len(findings) != 0 {
		t.Errorf("safe migrations: %v %v", findings, err)
	}
	findings, err = lint.Dir(schemaMigrations(10, true, true))
	if err != nil {
		t.Fatal(err)
	}
	rules := map[lint.Rule]bool{}
	for _, f := range findings {
		rules[f.Rule] = true
	}
	for _, want := range []lint.Rule{lint.RuleUnbatchedDML, lint.RuleIndexConcurrently, lint.RuleSetNotNull} {
		if !rules[want] {
			t.Errorf("naive migrations: no %s finding in %v", want, findings)
		}
	}
}

// writerLockWaits reads the writers' waits on one table from
// log_lock_waits lines, ignoring other tables and modes.
func TestWriterLockWaits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "postgres.log")
	log := `2026-11-30 19:35:05.464 UTC [22934] postgres@postgres LOG:  process 22934 still waiting for RowExclusiveLock on relation 16428 of database 5 after 51.083 ms
2026-11-30 19:35:05.465 UTC [22919] postgres@postgres LOG:  process 22919 still waiting for AccessShareLock on relation 16428 of database 5 after 52.647 ms
2026-11-30 19:35:11.852 UTC [22938] postgres@postgres LOG:  process 22938 acquired RowExclusiveLock on relation 16428 of database 5 after 6409.321 ms
2026-11-30 19:35:11.853 UTC [22937] postgres@postgres LOG:  process 22937 acquired RowExclusiveLock on relation 16428 of database 5 after 806.840 ms
2026-11-30 20:17:12.401 UTC [10371] postgres@postgres LOG:  process 10371 acquired RowExclusiveLock on relation 16428 of database 5 after 50.145 ms at character 13
2026-11-30 19:35:11.853 UTC [22937] postgres@postgres LOG:  process 22937 acquired RowExclusiveLock on relation 99999 of database 5 after 9806.840 ms
2026-11-30 19:35:11.853 UTC [22971] postgres@postgres LOG:  duration: 6418.988 ms  statement: CREATE INDEX items_tag ON items (tag);
`
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	longest, n, err := writerLockWaits(path, 16428)
	if err != nil || n != 3 || longest != 6409321*time.Microsecond {
		t.Errorf("writerLockWaits = %v, %d, %v; want 6.409321s, 3 waits", longest, n, err)
	}
	if err := os.WriteFile(path, []byte("LOG:  process 1 acquired RowExclusiveLock on relation 16428 of database 5 after soon\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := writerLockWaits(path, 16428); err == nil || !strings.Contains(err.Error(), "cannot read") {
		t.Errorf("a line it cannot read: error %v", err)
	}
	if _, _, err := writerLockWaits(filepath.Join(t.TempDir(), "missing.log"), 16428); err == nil {
		t.Error("a missing log: no error")
	}
}
