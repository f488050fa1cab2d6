package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
)

// ssoSuite runs the SSO example's own benchmark command (examples/sso's
// cmd/ssobench: a chaos run under a login load on Patroni, Redis
// Sentinels and three instances behind HAProxy, a code replay race, the
// token endpoint at a fixed rate, login throughput with the production
// argon2id parameters) and passes its METRIC lines through. The example
// is a module of its own that imports this one, so this module cannot
// import it: the suite runs `go run ./cmd/ssobench` in examples/sso.
func ssoSuite(ctx context.Context, r *report) error {
	cmd := exec.CommandContext(ctx, "go", "run", "./cmd/ssobench")
	cmd.Dir = "examples/sso"
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("go run ./cmd/ssobench in examples/sso: %w", err)
	}
	err = passMetrics(stdout, r)
	if werr := cmd.Wait(); werr != nil {
		return fmt.Errorf("ssobench: %w", werr)
	}
	if err != nil {
		return fmt.Errorf("ssobench output: %w", err)
	}
	return nil
}
