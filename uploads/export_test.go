package uploads

// PartMemoryState is a snapshot of an S3Bucket's part memory, for tests.
type PartMemoryState struct {
	InUse   int  // chunks handed out
	Waiting int  // parts waiting for memory
	Full    bool // a new upload's first chunk would come from the reserve
}

// PartMemoryOf returns b's part memory state.
func PartMemoryOf(b *S3Bucket) PartMemoryState {
	p := b.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	return PartMemoryState{InUse: p.made - len(p.spare), Waiting: p.waiting, Full: !p.grantable(&part{}, 1)}
}
