package jobs

// SetAfterEnqueue lets tests make a relay fail in the middle of a batch, as
// a crash would.
func SetAfterEnqueue(r *Relay, f func(n int) error) { r.afterEnqueue = f }
