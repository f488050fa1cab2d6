package dbrouter

import "time"

// A replica's lag is how stale a read on it can be: the age of the oldest
// transaction committed on the primary that the replica has not replayed.
// The router reports an upper bound of it, never less, since MaxLag is a
// promise about staleness. Two bounds are at hand:
//
//   - the replica's own: now() - pg_last_xact_replay_timestamp(), the age
//     of the last transaction it replayed. The transactions it lacks came
//     after that one, so they are younger. But after the primary was idle
//     for a while, this reads the whole idle time, whether the replica
//     lacks a commit made since or nothing at all.
//   - the router's, from the history below: the primary's insert position
//     as probed, with the router's clock. If the primary's insert position
//     at time t was at or before R, the replica's replay position, then
//     every WAL record past R was written after t, and so was every commit
//     the replica lacks: its lag is at most now - t. The router takes the
//     last sample at or before R, so the bound exceeds the true lag by
//     about the time between samples (a ProbeInterval).
//
// The lag reported is the lesser of the two (see Router.replayLag). While
// a primary is known, a replica that has replayed all it received is not
// taken as caught up: one that receives nothing (cut off from the
// primary, its conninfo broken, replaying an archive) has replayed all it
// received and lacks every commit since. Its history bound stays small
// while it keeps up with the primary (the primary's position, sampled a
// ProbeInterval or less before, is at or before its own) and grows from
// the last sample it has replayed when it stops keeping up.
//
// The samples are the router's probes of the primary. Both ends are read
// with the router's monotonic clock: t is when the primary's probe started
// (no later than the server read its insert position), and now is when
// the replica's probe ended (no earlier than the server read its replay
// position), so neither end makes the bound smaller than the truth. No
// server clock is compared with the router's.
//
// Timing: a sample (t, L <= R) bounds the lag at the replica's read by
// max(0, now - t) without any ordering between the two reads, as long as
// both positions belong to one history (the same primary, server run and
// timeline, and a replica replaying that timeline): if t came before the
// read, everything the replica lacks was written after t; if t came after
// it, the primary had written nothing past R when the replica read R, and
// the replica lacked nothing. The history is reset when the primary
// changes, restarts or changes timeline, and used only for a replica whose
// last restartpoint is on the history's timeline (see rywEligible): a
// replica left on an older timeline past where the new one begins would
// find every sample at or before its position while it lacks all the new
// primary's commits. A replica that has received WAL past R, though,
// cannot have read R before a sample at or before R of its own history
// (that WAL existed on the primary before its probe ended, and was
// written after the sample): such a sample, no earlier than the probe's
// end, means another history, and is not used.

// historyLen is how many samples of the primary's insert position the
// router keeps: at one probe per ProbeInterval (500ms by default), half a
// minute of history; equal positions (an idle primary) take one sample.
// Thinning (maxSampleGap) keeps any two samples with one between them at
// least its gap apart, so the history spans at least 31 gaps whatever the
// probing. A replica whose replay position is older than every sample
// keeps its own bound.
const historyLen = 64

// maxSampleGap caps the spacing below which samples are thinned: a sample
// that comes less than min(ProbeInterval/4, maxSampleGap) after the one
// before the newest replaces the newest, so that bursts of probes (fast
// probing, Refresh calls) do not push out the history. What that costs the
// bound is less than that gap.
const maxSampleGap = 100 * time.Millisecond

// maxPageHeader is the most a WAL page header takes: the long form, at the
// start of a segment (SizeOfXLogLongPHD).
const maxPageHeader = 40

// lsnSample is the primary's insert position as of a time.
type lsnSample struct {
	at  time.Time // when the probe that read it started (router's clock)
	lsn LSN
}

// lsnHistory holds recent samples of one primary's insert position, in
// one server run and on one timeline, oldest first: positions of other
// runs or timelines cannot be compared. Guarded by Router.mu.
type lsnHistory struct {
	node     *node
	run      int64
	timeline int
	pageSize LSN           // the primary's wal_block_size
	gap      time.Duration // min(ProbeInterval/4, maxSampleGap)

	ring  [historyLen]lsnSample
	first int // index in ring of the oldest sample
	n     int // samples held
}

// sample returns the i-th sample, oldest first.
func (h *lsnHistory) sample(i int) *lsnSample { return &h.ring[(h.first+i)%historyLen] }

// add records a probe of n, the current primary. A probe of another node,
// run or timeline than the samples held, or one whose position is lower
// than the newest sample's, starts the history again.
func (h *lsnHistory) add(n *node, p *probe) {
	if h.node == n && h.n > 0 && !p.startedAt.After(h.sample(h.n-1).at) {
		return // not newer than the newest sample
	}
	if h.node != n || h.run != p.run || h.timeline != p.timeline || (h.n > 0 && p.lsn < h.sample(h.n-1).lsn) {
		h.node, h.run, h.timeline, h.pageSize = n, p.run, p.timeline, LSN(p.walBlockSize)
		h.first, h.n = 0, 0
	}
	s := lsnSample{at: p.startedAt, lsn: p.lsn}
	if h.n > 0 {
		newest := h.sample(h.n - 1)
		// Same position: the later time is the better sample for every
		// replica it applies to. Too close to the sample before the
		// newest: the newest goes; it was less than gap after that
		// sample, which then bounds the replicas it bounded, by less
		// than gap more.
		if s.lsn == newest.lsn || (h.n > 1 && s.at.Sub(h.sample(h.n-2).at) < h.gap) {
			*newest = s
			return
		}
	}
	if h.n == historyLen {
		h.first = (h.first + 1) % historyLen
		h.n--
	}
	*h.sample(h.n) = s
	h.n++
}

// bound returns the router's bound on the lag of a replica that has
// replayed up to replayed, by a probe that ended at readBy, with primary
// the current primary (nil: none); received tells that the replica had
// received WAL past replayed. ok is false when no sample applies: no
// primary, samples of another node, a replay position older than every
// sample, or, for a replica that had received past replayed, a newest
// sample at or before replayed that is no earlier than readBy (another
// history). The caller checks the replica's timeline.
func (h *lsnHistory) bound(primary *node, replayed LSN, readBy time.Time, received bool) (lag time.Duration, ok bool) {
	if primary == nil || h.node != primary {
		return 0, false
	}
	// The insert position of a primary whose last record ended on a WAL
	// page boundary reads past the next page's header (every page begins
	// with one, 24 or 40 bytes), while a replica that replayed that record
	// reads the boundary: such a sample counts as at the boundary. No
	// record fits in the 40 bytes after a boundary besides the header (a
	// record header alone is 24 bytes).
	atBoundary := h.pageSize > 0 && replayed%h.pageSize == 0
	for i := h.n - 1; i >= 0; i-- {
		if s := h.sample(i); s.lsn <= replayed || (atBoundary && s.lsn-replayed <= maxPageHeader) {
			switch {
			case s.at.Before(readBy):
				return readBy.Sub(s.at), true
			case received:
				return 0, false
			}
			return 0, true // the primary had written nothing past replayed
		}
	}
	return 0, false
}

// replayLag returns the lag to report for a replica's probe p: the lesser
// of its own bound and the history's, when the history applies (a primary
// is known, and the replica's last restartpoint is on the history's
// timeline). A replica that replayed no transaction since it started (or
// whose clock is behind the primary's, which makes its own bound negative)
// has no bound of its own: the history's, else 0, since the server says no
// more.
//
// While no primary is known, a replica that has replayed all it received
// reads 0, as it did before the history: the primary is down, hung or cut
// off from the router, and reads go on from the replicas meanwhile (a
// failover takes seconds; its own bound would reach MaxLag within one
// after an idle period). That understates only if the primary is in fact
// committing behind a partition that cuts off the replica too. Called
// with r.mu held.
func (r *Router) replayLag(p *probe) time.Duration {
	primary := r.view.Load().primary
	if primary == nil && !p.behind {
		return 0
	}
	var hist time.Duration
	ok := false
	if p.checkpointTimeline == r.hist.timeline {
		hist, ok = r.hist.bound(primary, p.lsn, p.startedAt.Add(p.took), p.behind)
	}
	switch {
	case ok && (!p.ageKnown || hist < p.age):
		return hist
	case p.ageKnown:
		return p.age
	}
	return 0
}
