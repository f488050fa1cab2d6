package session

import (
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"fmt"
	"math"
	"reflect"
	"time"
)

// errCorrupt marks session data that cannot be decoded: garbage, or written
// by an incompatible version. The Manager drops such a session and starts a
// fresh one.
var errCorrupt = errors.New("session: corrupt session data")

// The session's values are encoded one by one, so stores can merge
// requests' changes key by key without decoding (or even knowing) the
// types. Common types have a compact form; anything else goes through gob
// (register your types with gob.Register, as with scs).
const (
	tagString byte = 's'
	tagBytes  byte = 'b'
	tagBool   byte = 't'
	tagInt    byte = 'i'
	tagInt64  byte = 'I'
	tagFloat  byte = 'f'
	tagTime   byte = 'T'
	tagGob    byte = 'g'
)

// encodeValue encodes one session value.
func encodeValue(v any) ([]byte, error) {
	switch x := v.(type) {
	case string:
		return append([]byte{tagString}, x...), nil
	case []byte:
		return append([]byte{tagBytes}, x...), nil
	case bool:
		if x {
			return []byte{tagBool, 1}, nil
		}
		return []byte{tagBool, 0}, nil
	case int:
		return binary.AppendVarint([]byte{tagInt}, int64(x)), nil
	case int64:
		return binary.AppendVarint([]byte{tagInt64}, x), nil
	case float64:
		return binary.BigEndian.AppendUint64([]byte{tagFloat}, math.Float64bits(x)), nil
	case time.Time:
		b, err := x.MarshalBinary()
		if err != nil {
			return nil, err
		}
		return append([]byte{tagTime}, b...), nil
	}
	var buf bytes.Buffer
	buf.WriteByte(tagGob)
	if err := gob.NewEncoder(&buf).Encode(&v); err != nil {
		return nil, fmt.Errorf("session: encode a %T (register it with gob.Register): %w", v, err)
	}
	return buf.Bytes(), nil
}

// decodeValue decodes one session value.
func decodeValue(b []byte) (any, error) {
	if len(b) == 0 {
		return nil, errCorrupt
	}
	body := b[1:]
	switch b[0] {
	case tagString:
		return string(body), nil
	case tagBytes:
		return bytes.Clone(body), nil
	case tagBool:
		if len(body) != 1 {
			return nil, errCorrupt
		}
		return body[0] == 1, nil
	case tagInt:
		v, n := binary.Varint(body)
		if n != len(body) {
			return nil, errCorrupt
		}
		return int(v), nil
	case tagInt64:
		v, n := binary.Varint(body)
		if n != len(body) {
			return nil, errCorrupt
		}
		return v, nil
	case tagFloat:
		if len(body) != 8 {
			return nil, errCorrupt
		}
		return math.Float64frombits(binary.BigEndian.Uint64(body)), nil
	case tagTime:
		var t time.Time
		if err := t.UnmarshalBinary(body); err != nil {
			return nil, errCorrupt
		}
		return t, nil
	case tagGob:
		var v any
		if err := gob.NewDecoder(bytes.NewReader(body)).Decode(&v); err != nil {
			return nil, fmt.Errorf("%w: %v", errCorrupt, err)
		}
		return v, nil
	}
	return nil, errCorrupt
}

// sameValue reports whether two encoded values hold the same value. The
// compact encodings are canonical (a float64 NaN put back unchanged keeps
// its bits); gob's is not (it writes a map's entries in random order), so
// gob values that differ byte for byte are decoded and compared as values,
// with NaN equal to NaN: a map holding a NaN that a request only read is
// unchanged.
func sameValue(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	if len(a) == 0 || len(b) == 0 || a[0] != tagGob || b[0] != tagGob {
		return false
	}
	x, err := decodeValue(a)
	if err != nil {
		return false
	}
	y, err := decodeValue(b)
	return err == nil && deepEqual(reflect.ValueOf(x), reflect.ValueOf(y))
}

// deepEqual reports whether x and y are deeply equal as reflect.DeepEqual
// has it, except that a floating-point NaN equals any NaN (DeepEqual,
// following ==, has NaN unequal to itself, so a value holding one never
// equals its own copy), also as a map key, and that two pointers are
// compared by what they point to.
func deepEqual(x, y reflect.Value) bool { return equal(x, y, map[visit]bool{}) }

// visit is a pair of references being compared, to stop at a cycle (a
// gob value has none, but one made by a type's own GobDecode might).
type visit struct {
	x, y uintptr
	t    reflect.Type
}

func equal(x, y reflect.Value, path map[visit]bool) bool {
	if !x.IsValid() || !y.IsValid() {
		return x.IsValid() == y.IsValid()
	}
	if x.Type() != y.Type() {
		return false
	}
	switch x.Kind() {
	case reflect.Map, reflect.Slice, reflect.Pointer:
		if x.IsNil() || y.IsNil() {
			return x.IsNil() == y.IsNil()
		}
		if x.Pointer() == y.Pointer() && (x.Kind() != reflect.Slice || x.Len() == y.Len()) {
			return true
		}
		// Back at a pair this comparison is inside of: a cycle, equal
		// so far (as DeepEqual has it).
		v := visit{x.Pointer(), y.Pointer(), x.Type()}
		if path[v] {
			return true
		}
		path[v] = true
		defer delete(path, v)
	}
	switch x.Kind() {
	case reflect.Bool:
		return x.Bool() == y.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return x.Int() == y.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return x.Uint() == y.Uint()
	case reflect.Float32, reflect.Float64:
		return sameFloat(x.Float(), y.Float())
	case reflect.Complex64, reflect.Complex128:
		a, b := x.Complex(), y.Complex()
		return sameFloat(real(a), real(b)) && sameFloat(imag(a), imag(b))
	case reflect.String:
		return x.String() == y.String()
	case reflect.Array, reflect.Slice:
		if x.Len() != y.Len() {
			return false
		}
		for i := range x.Len() {
			if !equal(x.Index(i), y.Index(i), path) {
				return false
			}
		}
		return true
	case reflect.Interface:
		if x.IsNil() || y.IsNil() {
			return x.IsNil() == y.IsNil()
		}
		return equal(x.Elem(), y.Elem(), path)
	case reflect.Pointer:
		return equal(x.Elem(), y.Elem(), path)
	case reflect.Struct:
		for i := range x.NumField() {
			if !equal(x.Field(i), y.Field(i), path) {
				return false
			}
		}
		return true
	case reflect.Map:
		if x.Len() != y.Len() {
			return false
		}
		for it := x.MapRange(); it.Next(); {
			v := y.MapIndex(it.Key())
			if !v.IsValid() {
				// No key == this one in y: a key holding a NaN (or a
				// pointer) can still have its equal there.
				return sameEntries(x, y, path)
			}
			if !equal(it.Value(), v, path) {
				return false
			}
		}
		return true
	}
	// Funcs, channels and unsafe pointers, which gob does not carry:
	// equal only when both are nil, as DeepEqual has funcs.
	return x.IsNil() && y.IsNil()
}

// sameFloat reports whether a and b are equal, or both NaN.
func sameFloat(a, b float64) bool { return a == b || a != a && b != b }

// sameEntries reports whether maps x and y, of one type and length, pair
// off entry by entry under equal: for keys that == cannot find, such as
// NaN. Quadratic, for those rare maps only.
func sameEntries(x, y reflect.Value, path map[visit]bool) bool {
	type entry struct{ k, v reflect.Value }
	var rest []entry
	for it := y.MapRange(); it.Next(); {
		rest = append(rest, entry{it.Key(), it.Value()})
	}
next:
	for it := x.MapRange(); it.Next(); {
		for i, e := range rest {
			if equal(it.Key(), e.k, path) && equal(it.Value(), e.v, path) {
				rest[i] = rest[len(rest)-1]
				rest = rest[:len(rest)-1]
				continue next
			}
		}
		return false
	}
	return true
}

// The whole session for scs's Codec: a format byte, the deadline, then
// each key and its encoded value.
const formatV1 byte = 1

func encodeRecord(r Record) []byte {
	size := 1 + 8 + binary.MaxVarintLen64
	for k, v := range r.Values {
		size += len(k) + len(v) + 2*binary.MaxVarintLen64
	}
	b := make([]byte, 0, size)
	b = append(b, formatV1)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Deadline.UnixNano()))
	b = binary.AppendUvarint(b, uint64(len(r.Values)))
	for k, v := range r.Values {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	return b
}

func decodeRecord(b []byte) (Record, error) {
	if len(b) < 10 || b[0] != formatV1 {
		return Record{}, errCorrupt
	}
	r := Record{Deadline: time.Unix(0, int64(binary.BigEndian.Uint64(b[1:9]))).UTC()}
	rest := b[9:]
	n, k := binary.Uvarint(rest)
	if k <= 0 || n > uint64(len(rest)) {
		return Record{}, errCorrupt
	}
	rest = rest[k:]
	r.Values = make(map[string][]byte, n)
	read := func() ([]byte, bool) {
		l, k := binary.Uvarint(rest)
		if k <= 0 || l > uint64(len(rest)-k) {
			return nil, false
		}
		v := rest[k : k+int(l)]
		rest = rest[k+int(l):]
		return v, true
	}
	for range n {
		key, ok1 := read()
		val, ok2 := read()
		if !ok1 || !ok2 {
			return Record{}, errCorrupt
		}
		r.Values[string(key)] = val
	}
	if len(rest) != 0 {
		return Record{}, errCorrupt
	}
	return r, nil
}

// codec is scs's Codec for hakit sessions.
type codec struct{}

func (codec) Encode(deadline time.Time, values map[string]any) ([]byte, error) {
	r := Record{Deadline: deadline, Values: make(map[string][]byte, len(values))}
	for k, v := range values {
		b, err := encodeValue(v)
		if err != nil {
			return nil, fmt.Errorf("session: key %q: %w", k, err)
		}
		r.Values[k] = b
	}
	return encodeRecord(r), nil
}

func (codec) Decode(b []byte) (time.Time, map[string]any, error) {
	r, err := decodeRecord(b)
	if err != nil {
		return time.Time{}, nil, err
	}
	values := make(map[string]any, len(r.Values))
	for k, v := range r.Values {
		x, err := decodeValue(v)
		if err != nil {
			return time.Time{}, nil, fmt.Errorf("%w: key %q", err, k)
		}
		values[k] = x
	}
	return r.Deadline, values, nil
}
