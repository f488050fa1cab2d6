package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

// shopSuite runs the shop's own benchmark command (examples/shop's
// cmd/shopbench: a chaos run under a scripted-customer load, then product
// pages through HAProxy) and passes its METRIC lines through. The shop is
// a module of its own that imports this one, so this module cannot import
// it: the suite runs `go run ./cmd/shopbench` in examples/shop instead.
func shopSuite(ctx context.Context, r *report) error {
	cmd := exec.CommandContext(ctx, "go", "run", "./cmd/shopbench")
	cmd.Dir = "examples/shop"
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("go run ./cmd/shopbench in examples/shop: %w", err)
	}
	err = passMetrics(stdout, r)
	if werr := cmd.Wait(); werr != nil {
		return fmt.Errorf("shopbench: %w", werr)
	}
	return err
}

// passMetrics reads shopbench's output: METRIC lines become the report's
// metrics, the rest its table.
func passMetrics(in io.Reader, r *report) error {
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		line := sc.Text()
		if m, ok := strings.CutPrefix(line, "METRIC "); ok {
			name, value, found := strings.Cut(m, "=")
			if !found || name == "" {
				return fmt.Errorf("shopbench: malformed metric line %q", line)
			}
			r.metric(name, value)
			continue
		}
		r.row(line)
	}
	return sc.Err()
}
