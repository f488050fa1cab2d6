package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"hakit.dev/lint"
)

// runLint is `hakit lint`.
func runLint(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("hakit lint", flag.ContinueOnError)
	fl.SetOutput(stderr)
	contract := fl.Bool("contract", false, "lint the files as contract migrations (drops and renames allowed)")
	rules := fl.Bool("rules", false, "list the rules and exit")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if *rules {
		for _, r := range lint.Rules() {
			fmt.Fprintln(stdout, r)
		}
		return 0
	}
	if fl.NArg() == 0 {
		fmt.Fprintln(stderr, "usage: hakit lint [-contract] [-rules] PATH...")
		return 2
	}
	var findings []lint.Finding
	failed := false // a file that cannot be read or parsed
	for _, p := range fl.Args() {
		f, err := lintPath(p, *contract)
		findings = append(findings, f...)
		if err != nil {
			failed = true
			var joined interface{ Unwrap() []error }
			if errors.As(err, &joined) {
				for _, e := range joined.Unwrap() {
					fmt.Fprintln(stderr, e)
				}
			} else {
				fmt.Fprintln(stderr, err)
			}
		}
	}
	for _, f := range findings {
		fmt.Fprintln(stdout, f)
	}
	switch {
	case failed:
		return 2
	case len(findings) > 0:
		return 1
	}
	return 0
}

// lintPath lints a file, or every up migration of a directory.
func lintPath(p string, contract bool) ([]lint.Finding, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		src, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		dir := filepath.ToSlash(filepath.Dir(p))
		c := contract || slices.Contains(strings.Split(dir, "/"), "contract")
		return lint.Options{Contract: c}.File(p, src)
	}
	if contract {
		return nil, fmt.Errorf("%s: -contract applies to files; a directory's contract migrations are those under a directory named contract", p)
	}
	findings, err := lint.Dir(os.DirFS(p))
	for i := range findings {
		findings[i].File = filepath.Join(p, filepath.FromSlash(findings[i].File))
	}
	var pe *lint.ParseError
	if err != nil && errors.As(err, &pe) {
		// Name the files as given on the command line.
		err = prefixParseErrors(p, err)
	}
	return findings, err
}

// prefixParseErrors puts dir in front of the file of each *lint.ParseError
// in err.
func prefixParseErrors(dir string, err error) error {
	var joined interface{ Unwrap() []error }
	errs := []error{err}
	if errors.As(err, &joined) {
		errs = joined.Unwrap()
	}
	for _, e := range errs {
		var pe *lint.ParseError
		if errors.As(e, &pe) {
			pe.File = filepath.Join(dir, filepath.FromSlash(pe.File))
		}
	}
	return errors.Join(errs...)
}
