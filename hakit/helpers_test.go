package hakit_test

import (
	"os"
	"testing"

	"hakit.dev/hatest"
)

func hatestSkip(t *testing.T) {
	t.Helper()
	if os.Getenv(hatest.EnvSkipServices) == "1" {
		t.Skip("HAKIT_SKIP_SERVICES=1")
	}
}
