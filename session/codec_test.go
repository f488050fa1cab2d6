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
