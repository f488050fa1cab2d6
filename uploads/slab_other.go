//go:build !unix || race

package uploads

// allocSlab returns n bytes of part memory, on the heap where there is no
// anonymous mapping, and under the race detector, which does not see
// memory outside the heap: a read of a chunk given back to the pool would
// go unnoticed there.
func allocSlab(n int) ([]byte, func()) { return make([]byte, n), func() {} }
