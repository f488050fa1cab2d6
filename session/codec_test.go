package session

import (
	"encoding/gob"
	"errors"
	"math"
	"reflect"
	"strconv"
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

// TestSameValueNaN: NaN is not equal to itself, but a value holding one is
// the same value as its copy, wherever the NaN is (a map value or key, a
// struct field, a slice, a complex number); real changes next to a NaN
// still count.
func TestSameValueNaN(t *testing.T) {
	type scored struct {
		Name   string
		Scores []float64
		Z      complex128
	}
	gob.Register(map[string]float64{})
	gob.Register(map[float64]string{})
	gob.Register(scored{})
	gob.Register(map[string]scored{})
	nan := math.NaN()
	enc := func(v any) []byte {
		b, err := encodeValue(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	big := map[string]float64{"pending": nan}
	for i := range 40 {
		big[strconv.Itoa(i)] = float64(i) / 3
	}
	for name, v := range map[string]any{
		"float":        nan,
		"map value":    big,
		"map key":      map[float64]string{nan: "a", 1: "b", 2: "c"},
		"two NaN keys": map[float64]string{nan: "a", math.Float64frombits(math.Float64bits(nan) ^ 1): "a", 1: "b"},
		"struct":       map[string]scored{"x": {"x", []float64{1, nan}, complex(nan, 1)}, "y": {"y", nil, 0}},
	} {
		a := enc(v)
		for range 20 { // gob's order differs from run to run
			if !sameValue(a, enc(v)) {
				t.Fatalf("%s: the same value compares as changed", name)
			}
		}
	}
	changed := map[string]float64{}
	for k, v := range big {
		changed[k] = v
	}
	changed["7"]++
	for name, pair := range map[string][2]any{
		"map value":          {big, changed},
		"NaN to number":      {map[string]float64{"a": nan}, map[string]float64{"a": 0}},
		"map key":            {map[float64]string{nan: "a", 1: "b"}, map[float64]string{nan: "b", 1: "b"}},
		"NaN key to number":  {map[float64]string{nan: "a", 1: "b"}, map[float64]string{0: "a", 1: "b"}},
		"one NaN key of two": {map[float64]string{nan: "a", math.Float64frombits(math.Float64bits(nan) ^ 1): "a"}, map[float64]string{nan: "a", 3: "a"}},
		"slice":              {scored{"x", []float64{1, nan}, 0}, scored{"x", []float64{2, nan}, 0}},
		"complex":            {scored{"x", nil, complex(nan, 1)}, scored{"x", nil, complex(nan, 2)}},
	} {
		if sameValue(enc(pair[0]), enc(pair[1])) {
			t.Errorf("%s: a change compares as the same value", name)
		}
	}
}

// TestDeepEqualAgreesWithReflect: without NaN, deepEqual answers as
// reflect.DeepEqual, also for unexported fields, nil against empty, and a
// cycle.
func TestDeepEqualAgreesWithReflect(t *testing.T) {
	type node struct {
		V    int
		Next *node
	}
	type hidden struct {
		m map[string]int
		s []string
	}
	ring := func(v int) *node {
		n := &node{V: v}
		n.Next = &node{V: 2, Next: n}
		return n
	}
	cases := [][2]any{
		{1, 1}, {1, 2}, {1, int64(1)}, {"a", "a"}, {"a", "b"}, {nil, nil}, {nil, 0},
		{[]int(nil), []int{}}, {map[string]int(nil), map[string]int{}}, {[]int{1}, []int{1}},
		{map[string]any{"a": []any{1, "x"}}, map[string]any{"a": []any{1, "x"}}},
		{map[string]any{"a": []any{1, "x"}}, map[string]any{"a": []any{1, "y"}}},
		{hidden{map[string]int{"a": 1}, []string{"x"}}, hidden{map[string]int{"a": 1}, []string{"x"}}},
		{hidden{map[string]int{"a": 1}, nil}, hidden{map[string]int{"a": 2}, nil}},
		{ring(1), ring(1)}, {ring(1), ring(3)},
		{[2]float64{1, 2}, [2]float64{1, 2}}, {[2]float64{1, 2}, [2]float64{1, 3}},
		{time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
	}
	for i, c := range cases {
		want := reflect.DeepEqual(c[0], c[1])
		if got := deepEqual(reflect.ValueOf(c[0]), reflect.ValueOf(c[1])); got != want {
			t.Errorf("case %d (%#v vs %#v): deepEqual %t, reflect.DeepEqual %t", i, c[0], c[1], got, want)
		}
	}
}
