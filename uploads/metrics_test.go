package uploads_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"hakit.dev/uploads"
)

// Two Stores register in one registry, their metrics told apart by a
// store label (the Prefix by default, or Config.Name).
func TestStoresShareARegistry(t *testing.T) {
	b, err := uploads.NewDiskBucket(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	for _, cfg := range []uploads.Config{
		{Bucket: b, Prefix: "avatars/"},
		{Bucket: b, Prefix: "documents/"},
		{Bucket: b, Prefix: "documents/", Name: "archive"},
	} {
		cfg.Logger = quiet()
		st, err := uploads.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := reg.Register(st); err != nil {
			t.Fatalf("registering the Store for %q: %v", cfg.Prefix, err)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	stores := map[string]bool{}
	for _, mf := range mfs {
		if mf.GetName() != "hakit_uploads_bytes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "store" {
					stores[l.GetValue()] = true
				}
			}
		}
	}
	if len(stores) != 3 || !stores["avatars"] || !stores["documents"] || !stores["archive"] {
		t.Fatalf("store labels: %v", stores)
	}
}

// Store exposes no fields, in particular no embedded internal type.
func TestStoreHasNoExportedFields(t *testing.T) {
	typ := reflect.TypeFor[uploads.Store]()
	var exported []string
	for f := range typ.Fields() {
		if f.IsExported() {
			exported = append(exported, f.Name+" "+f.Type.String())
		}
	}
	if len(exported) > 0 {
		t.Fatalf("exported fields of uploads.Store: %s", strings.Join(exported, ", "))
	}
	var _ prometheus.Collector = (*uploads.Store)(nil)
}
