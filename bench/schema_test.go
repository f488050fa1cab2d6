package main

import (
	"context"
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
	safe, err := runSchemaDeploy(ctx, schemaDeploy{Rows: 1_000_000})
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
