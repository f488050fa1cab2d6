package hakit

import (
	"runtime/debug"
	"testing"
)

// The default jobs namespace is the main module's path: the same for
// every binary of one module, different for another module's app.
func TestJobsNamespaceFromBuildInfo(t *testing.T) {
	for _, c := range []struct {
		info *debug.BuildInfo
		ok   bool
		want string
	}{
		{&debug.BuildInfo{Path: "example.com/shop/cmd/web", Main: debug.Module{Path: "example.com/shop"}}, true, "example.com/shop"},
		{&debug.BuildInfo{Path: "example.com/shop/cmd/worker", Main: debug.Module{Path: "example.com/shop"}}, true, "example.com/shop"},
		{&debug.BuildInfo{Path: "hakit.dev/examples/sso", Main: debug.Module{Path: "hakit.dev/examples/sso"}}, true, "hakit.dev/examples/sso"},
		{&debug.BuildInfo{Path: "command-line-arguments", Main: debug.Module{Path: "example.com/shop"}}, true, "example.com/shop"},
		{&debug.BuildInfo{Path: "command-line-arguments", Main: debug.Module{Path: "command-line-arguments"}}, true, ""},
		{&debug.BuildInfo{}, true, ""},
		{nil, false, ""},
	} {
		if got := jobsNamespace(c.info, c.ok); got != c.want {
			t.Errorf("jobsNamespace(%+v, %v) = %q; want %q", c.info, c.ok, got, c.want)
		}
	}
}
