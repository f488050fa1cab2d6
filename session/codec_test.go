package session

import (
	"encoding/gob"
	"errors"
	"reflect"
	"testing"
	"time"
)

type cartItem struct {
	SKU string
	Qty int
}

func TestCodecRoundTrip(t *testing.T) {
	gob.Register(cartItem{})
	deadline := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	values := map[string]any{
		"s": "text", "b": []byte{0, 1, 2}, "t": true, "f": false, "i": -42, "I": int64(1 << 40),
		"x": 3.25, "when": time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC), "item": cartItem{"tea", 2},
		"empty": "",
	}
	b, err := codec{}.Encode(deadline, values)
	if err != nil {
		t.Fatal(err)
	}
	d, got, err := codec{}.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Equal(deadline) || !reflect.DeepEqual(got, values) {
		t.Fatalf("round trip:\n got %v %#v\nwant %v %#v", d, got, deadline, values)
	}
}

func TestCodecRejectsGarbage(t *testing.T) {
	good, err := codec{}.Encode(time.Now(), map[string]any{"k": "v"})
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"empty":     nil,
		"version":   append([]byte{9}, good[1:]...),
		"truncated": good[:len(good)-1],
		"trailing":  append(append([]byte{}, good...), 0),
		"count":     {1, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x0f},
	} {
		if _, _, err := (codec{}).Decode(b); !errors.Is(err, errCorrupt) {
			t.Errorf("%s: err = %v, want errCorrupt", name, err)
		}
	}
	for _, v := range [][]byte{{}, {'?', 1}, {tagBool}, {tagFloat, 1}, {tagGob, 1, 2, 3}, {tagInt, 0x80}} {
		if _, err := decodeValue(v); !errors.Is(err, errCorrupt) {
			t.Errorf("value %v: err = %v, want errCorrupt", v, err)
		}
	}
	type unregistered struct{ X chan int }
	if _, err := (codec{}).Encode(time.Now(), map[string]any{"c": unregistered{}}); err == nil {
		t.Error("a value gob cannot encode was accepted")
	}
}

func FuzzDecodeRecord(f *testing.F) {
	good, _ := codec{}.Encode(time.Now(), map[string]any{"k": "v", "n": 3})
	f.Add(good)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, _ = codec{}.Decode(b) // must not panic
	})
}

// TestSameValueComparesValues: gob writes a map's entries in random order,
// so equal maps (also inside structs and nested maps) must compare equal by
// value, and any real change must not.
func TestSameValueComparesValues(t *testing.T) {
	type withMap struct {
		Name string
		Tags map[string]bool
	}
	gob.Register(map[string]int{})
	gob.Register(map[string]map[string]int{})
	gob.Register(withMap{})
	big := map[string]int{}
	for i := range 50 {
		big[string(rune('a'+i%26))+string(rune('a'+i/26))] = i
	}
	nested := map[string]map[string]int{"x": {"a": 1, "b": 2, "c": 3}, "y": {"d": 4, "e": 5}}
	s := withMap{"ann", map[string]bool{"a": true, "b": true, "c": true, "d": true}}
	enc := func(v any) []byte {
		b, err := encodeValue(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for name, v := range map[string]any{"map": big, "nested": nested, "struct": s, "string": "x", "int": 7} {
		a := enc(v)
		for range 20 { // gob's order differs from run to run
			if !sameValue(a, enc(v)) {
				t.Fatalf("%s: the same value compares as changed", name)
			}
		}
	}
	changed := map[string]int{}
	for k, v := range big {
		changed[k] = v
	}
	changed["aa"]++
	for name, pair := range map[string][2]any{
		"map entry":    {big, changed},
		"nested entry": {nested, map[string]map[string]int{"x": {"a": 1, "b": 2, "c": 3}, "y": {"d": 4, "e": 6}}},
		"struct map":   {s, withMap{"ann", map[string]bool{"a": true, "b": true, "c": true}}},
		"type":         {map[string]int{"a": 1}, "a"},
		"int":          {1, 2},
	} {
		if sameValue(enc(pair[0]), enc(pair[1])) {
			t.Errorf("%s: a change compares as the same value", name)
		}
	}
}
