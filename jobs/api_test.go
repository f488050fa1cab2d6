package jobs_test

import (
	"reflect"
	"strings"
	"testing"

	"hakit.dev/jobs"
)

// The exported types expose no fields: their metrics (an internal set)
// and their dependencies' structs are held, not embedded, so nothing of
// them becomes API or can be changed after construction.
func TestExportedTypesHaveNoExportedFields(t *testing.T) {
	for _, typ := range []reflect.Type{
		reflect.TypeFor[jobs.Client](),
		reflect.TypeFor[jobs.Relay](),
		reflect.TypeFor[jobs.Worker](),
		reflect.TypeFor[jobs.Scheduler](),
	} {
		var exported []string
		for f := range typ.Fields() {
			if f.IsExported() {
				exported = append(exported, f.Name+" "+f.Type.String())
			}
		}
		if len(exported) > 0 {
			t.Errorf("exported fields of %s: %s", typ, strings.Join(exported, ", "))
		}
	}
}
