package customer

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Count is what happened to the requests of one kind.
type Count struct {
	OK     int // answered as a shopper expects
	Failed int // transport error, 5xx, or a page other than the expected one
}

// Stats are the load's counters: cumulative since the start, except the
// latencies, which cover the last Config.Window.
type Stats struct {
	Requests   int
	Failed     int
	Kinds      map[string]Count // by step: home, category, product, cart_add, checkout, address, payment, review, place, order
	Errors     map[string]int   // failures by kind and cause, e.g. "place: status 502"
	Orders     int              // orders acknowledged to a customer
	SoldOut    int              // sold-out pages at place (a correct answer, not a failure)
	CartLost   int              // carts gone or changed while the customer held them without having seen an error
	Clamped    int              // cart adds the shop capped at its stock (a correct answer)
	StockShort int              // checkouts sent back to the cart for want of stock (a correct answer)
	Retries    int              // place requests repeated with the same key after an error
	P50, P99   time.Duration    // over the sliding window
	Window     int              // requests in the sliding window
}

// SuccessPct is the share of requests that succeeded, in percent (100
// when there were none).
func (s Stats) SuccessPct() float64 {
	if s.Requests == 0 {
		return 100
	}
	return 100 * float64(s.Requests-s.Failed) / float64(s.Requests)
}

// Sub returns the counters of s minus those of an earlier snapshot: what
// happened between the two. Latencies are s's own.
func (s Stats) Sub(earlier Stats) Stats {
	d := s
	d.Requests -= earlier.Requests
	d.Failed -= earlier.Failed
	d.Orders -= earlier.Orders
	d.SoldOut -= earlier.SoldOut
	d.CartLost -= earlier.CartLost
	d.Clamped -= earlier.Clamped
	d.StockShort -= earlier.StockShort
	d.Retries -= earlier.Retries
	d.Kinds = map[string]Count{}
	for k, c := range s.Kinds {
		e := earlier.Kinds[k]
		if c.OK != e.OK || c.Failed != e.Failed {
			d.Kinds[k] = Count{OK: c.OK - e.OK, Failed: c.Failed - e.Failed}
		}
	}
	d.Errors = map[string]int{}
	for k, n := range s.Errors {
		if n -= earlier.Errors[k]; n != 0 {
			d.Errors[k] = n
		}
	}
	return d
}

// String is one line: requests, success, p50/p99, orders, and the
// failures by cause.
func (s Stats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d requests, %.2f%% ok, p50 %s p99 %s, %d orders, %d sold out, %d place retries, %d carts lost",
		s.Requests, s.SuccessPct(), s.P50.Round(time.Millisecond), s.P99.Round(time.Millisecond), s.Orders, s.SoldOut, s.Retries, s.CartLost)
	if len(s.Errors) > 0 {
		keys := slices.Sorted(maps.Keys(s.Errors))
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%d× %s", s.Errors[k], k)
		}
		fmt.Fprintf(&b, "; failures: %s", strings.Join(parts, ", "))
	}
	return b.String()
}

// recorder collects counters and a sliding window of latencies.
type recorder struct {
	window time.Duration
	now    func() time.Time

	mu      sync.Mutex
	stats   Stats
	samples []sample // oldest first
}

type sample struct {
	at time.Time
	d  time.Duration
}

// maxSamples bounds the window's memory whatever the rate.
const maxSamples = 100_000

func newRecorder(window time.Duration, now func() time.Time) *recorder {
	return &recorder{window: window, now: now, stats: Stats{Kinds: map[string]Count{}, Errors: map[string]int{}}}
}

// request records one request of kind that took d; err nil means it
// succeeded.
func (r *recorder) request(kind string, d time.Duration, err error) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stats.Requests++
	c := r.stats.Kinds[kind]
	if err != nil {
		r.stats.Failed++
		c.Failed++
		r.stats.Errors[kind+": "+errorKind(err)]++
	} else {
		c.OK++
	}
	r.stats.Kinds[kind] = c
	r.samples = append(r.samples, sample{at: now, d: d})
	r.trim(now)
}

// event counts something that is not a request (an order, a sold-out
// page, a lost cart, a retry).
func (r *recorder) event(f func(*Stats)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(&r.stats)
}

func (r *recorder) trim(now time.Time) {
	cut := 0
	for cut < len(r.samples) && now.Sub(r.samples[cut].at) > r.window {
		cut++
	}
	if len(r.samples)-cut > maxSamples {
		cut = len(r.samples) - maxSamples
	}
	if cut > 0 {
		r.samples = append(r.samples[:0], r.samples[cut:]...)
	}
}

// snapshot returns a copy of the counters with the window's percentiles.
func (r *recorder) snapshot() Stats {
	r.mu.Lock()
	r.trim(r.now())
	s := r.stats
	s.Kinds = maps.Clone(r.stats.Kinds)
	s.Errors = maps.Clone(r.stats.Errors)
	ds := make([]time.Duration, len(r.samples))
	for i, x := range r.samples {
		ds[i] = x.d
	}
	r.mu.Unlock()
	s.Window = len(ds)
	s.P50, s.P99 = percentile(ds, 50), percentile(ds, 99)
	return s
}

// percentile returns the p-th percentile (nearest rank) of ds, sorting
// ds; 0 when it is empty.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	rank := int(float64(len(ds))*p/100+0.999999) - 1
	rank = max(0, min(rank, len(ds)-1))
	return ds[rank]
}
