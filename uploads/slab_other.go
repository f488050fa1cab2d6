//go:build !unix

package uploads

// allocSlab returns n bytes of part memory, on the heap where there is no
// anonymous mapping.
func allocSlab(n int) ([]byte, func()) { return make([]byte, n), func() {} }
