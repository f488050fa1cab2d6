package session_test

import (
	"reflect"
	"strings"
	"testing"

	"hakit.dev/session"
)

// Manager wraps scs rather than embedding its mutable SessionManager: no
// field of it is API, nor can be changed after New.
func TestManagerHasNoExportedFields(t *testing.T) {
	typ := reflect.TypeFor[session.Manager]()
	var exported []string
	for f := range typ.Fields() {
		if f.IsExported() {
			exported = append(exported, f.Name+" "+f.Type.String())
		}
	}
	if len(exported) > 0 {
		t.Fatalf("exported fields of session.Manager: %s", strings.Join(exported, ", "))
	}
}
