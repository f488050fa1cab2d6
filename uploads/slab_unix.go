//go:build unix && !race

package uploads

import "syscall"

// allocSlab returns n bytes of part memory outside the Go heap (an
// anonymous mapping) and the function that gives them back. Outside the
// heap, part buffers do not raise the garbage collector's goal: with
// them on the heap, GOGC's default lets garbage grow to as much again as
// the buffers before a collection, and the process's RSS with it.
func allocSlab(n int) ([]byte, func()) {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return make([]byte, n), func() {}
	}
	return b, func() { _ = syscall.Munmap(b) }
}
