package main

import (
	"context"
	"fmt"
	"io"
)

// runMigrate is `hakit migrate`.
func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	_ = ctx
	_ = stdout
	fmt.Fprintln(stderr, "usage: hakit migrate contract [-dir DIR]")
	return 2
}
