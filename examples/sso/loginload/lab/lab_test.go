package lab

import (
	"context"
	"strings"
	"testing"
)

// Bad options are refused before anything starts.
func TestBadOptions(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{}, "Bin is empty"},
		{Options{Bin: "/bin/true", Instances: -1}, "want at least 1"},
		{Options{Bin: "/bin/true", Nice: 20}, "want at most 19"},
	} {
		if l, err := Start(ctx, tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			if l != nil {
				l.Close()
			}
			t.Errorf("Start(%+v) = %v; want an error with %q", tc.opts, err, tc.want)
		}
	}
	var l Lab
	if _, err := l.Chaos(ctx, ChaosOptions{Steps: []Step{"minio-down"}}); err == nil || !strings.Contains(err.Error(), `unknown chaos step "minio-down"`) {
		t.Errorf("Chaos with an unknown step: %v", err)
	}
	if err := l.RollingRestart(ctx, "NO_EQUALS_SIGN"); err == nil || !strings.Contains(err.Error(), "want KEY=value") {
		t.Errorf("RollingRestart with a bad environment entry: %v", err)
	}
	if err := l.KillInstance(ctx, 3); err == nil {
		t.Error("KillInstance of a missing instance: no error")
	}
}
