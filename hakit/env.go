package hakit

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Env reads configuration from environment variables and collects what
// is wrong with them, so a misconfigured instance says everything that is
// wrong in one error instead of one variable per restart. [Env.Config]
// reads hakit's own HAKIT_* variables; the typed getters read the app's,
// which then appear in the same report and the same documentation:
//
//	env := hakit.NewEnv(nil)
//	cfg := env.Config()                                          // HAKIT_*
//	title := env.String("SHOP_TITLE", "Shop", "the site's name") // the app's
//	perPage := env.Int("SHOP_PER_PAGE", 20, "products per page")
//	if err := env.Err(); err != nil {
//		log.Fatal(err) // every bad variable, HAKIT_* and SHOP_*, listed at once
//	}
//
// A getter never fails: it returns the default for a variable that is
// unset or empty, and for one it cannot parse it records the problem (see
// [Env.Err]) and returns the default too. Values are trimmed of the
// spaces around them. Read each variable once (a second read records its
// problem again). An Env is not safe for concurrent use; read the
// configuration at start.
type Env struct {
	getenv func(string) string
	vars   []EnvVar
	seen   map[string]bool
	errs   []error
}

// NewEnv returns an Env reading variables through getenv (os.Getenv when
// nil; a map's lookup in tests).
func NewEnv(getenv func(string) string) *Env {
	if getenv == nil {
		getenv = os.Getenv
	}
	return &Env{getenv: getenv, seen: map[string]bool{}}
}

// read records the variable for Vars and returns its value, trimmed of
// spaces.
func (e *Env) read(v EnvVar) string {
	e.note(v)
	return strings.TrimSpace(e.getenv(v.Name))
}

// note records v for Vars, once.
func (e *Env) note(v EnvVar) {
	if !e.seen[v.Name] {
		e.seen[v.Name] = true
		e.vars = append(e.vars, v)
	}
}

// String returns the value of the variable name, or def when it is unset
// or empty. doc says what it is for, in [Env.Vars].
func (e *Env) String(name, def, doc string) string {
	if v := e.read(EnvVar{Name: name, Default: def, Help: doc}); v != "" {
		return v
	}
	return def
}

// Required returns the value of the variable name, and records an error
// when it is unset or empty.
func (e *Env) Required(name, doc string) string {
	v := e.read(EnvVar{Name: name, Default: "(required)", Help: doc})
	if v == "" {
		e.errs = append(e.errs, fmt.Errorf("%s is required: %s", name, doc))
	}
	return v
}

// Int returns the variable name as a decimal integer, or def when it is
// unset or empty. A value that is not an integer is an error. The range is
// the app's to check: report a value out of it with [Env.Invalid].
func (e *Env) Int(name string, def int, doc string) int {
	v := e.read(EnvVar{Name: name, Default: strconv.Itoa(def), Help: doc})
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		e.bad(name, v, errors.New("want an integer"))
		return def
	}
	return n
}

// Bool returns the variable name as a boolean (1, t, true, TRUE, 0, f,
// false, … as strconv.ParseBool reads them), or def when it is unset or
// empty. Anything else is an error.
func (e *Env) Bool(name string, def bool, doc string) bool {
	v := e.read(EnvVar{Name: name, Default: strconv.FormatBool(def), Help: doc})
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		e.bad(name, v, errors.New("want true or false"))
		return def
	}
	return b
}

// Duration returns the variable name as a time.Duration ("5s", "1m30s",
// "250ms"), or def when it is unset or empty. A value without a unit
// (other than 0) is an error. "0" is 0 and a negative value is negative:
// the meaning is the app's to give (hakit's own variables read 0 as none).
func (e *Env) Duration(name string, def time.Duration, doc string) time.Duration {
	v := e.read(EnvVar{Name: name, Default: durString(def), Help: doc})
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		e.bad(name, v, errors.New("want a duration such as 5s or 500ms"))
		return def
	}
	return d
}

// List returns the variable name split at commas, each element trimmed
// of spaces and empty ones dropped, or def when the variable is unset or
// empty.
func (e *Env) List(name string, def []string, doc string) []string {
	v := e.read(EnvVar{Name: name, Default: strings.Join(def, ","), Help: doc})
	if v == "" {
		return def
	}
	return splitList(v)
}

// Invalid records that the variable name holds a bad value, for what the
// getters cannot check (a range, a choice among words, two variables that
// contradict each other): err says what is wanted. The message shows the
// variable's value; do not use it for secrets (say what is wrong without
// the value, with a second variable as the name if need be).
func (e *Env) Invalid(name string, err error) {
	e.bad(name, strings.TrimSpace(e.getenv(name)), err)
}

func (e *Env) bad(name, v string, err error) {
	e.errs = append(e.errs, fmt.Errorf("%s=%q: %w", name, v, err))
}

// problem records an error that is already phrased.
func (e *Env) problem(err error) { e.errs = append(e.errs, err) }

// Err returns every problem recorded so far (by [Env.Config], the getters
// and [Env.Invalid]) in one error, one line each, in the order they were
// found; nil when there is none.
func (e *Env) Err() error {
	if err := errors.Join(e.errs...); err != nil {
		return fmt.Errorf("hakit: bad environment: %w", err)
	}
	return nil
}

// Vars returns the variables read so far, in the order first read: hakit's
// (with their Config field) and the app's (Field empty), for --help output
// and documentation.
func (e *Env) Vars() []EnvVar { return append([]EnvVar(nil), e.vars...) }

// durString writes d for the docs: "0" rather than "0s".
func durString(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	return d.String()
}
