package lab

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// PageLoad is the result of a product-page load.
type PageLoad struct {
	Requests int
	Failed   int
	Took     time.Duration
	RPS      float64       // successful requests per second
	P50, P99 time.Duration // over the successful requests
}

func (p PageLoad) String() string {
	return fmt.Sprintf("%d requests (%d failed) in %s: %.0f/s, p50 %s, p99 %s",
		p.Requests, p.Failed, p.Took.Round(10*time.Millisecond), p.RPS, p.P50.Round(100*time.Microsecond), p.P99.Round(100*time.Microsecond))
}

// ProductPages GETs /products/{id} of baseURL, cycling through ids, for d.
// With rate 0 it runs workers closed-loop clients as fast as the shop
// answers (throughput); with a rate it sends that many requests a second,
// each on its own (latency at a fixed load), at most workers at once.
func ProductPages(ctx context.Context, baseURL string, ids []int64, workers, rate int, d time.Duration) (PageLoad, error) {
	if len(ids) == 0 {
		return PageLoad{}, fmt.Errorf("lab: no product ids")
	}
	if workers < 1 || rate < 0 || d <= 0 || d > 10*time.Minute {
		return PageLoad{}, fmt.Errorf("lab: %d workers, rate %d, %s: want at least 1 worker, a rate of 0 or more, up to 10 minutes", workers, rate, d)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers + 8}}
	defer client.CloseIdleConnections()
	var (
		next   atomic.Int64
		mu     sync.Mutex
		lat    []time.Duration
		failed int
		total  int
	)
	one := func() {
		i := next.Add(1)
		url := baseURL + "/products/" + strconv.FormatInt(ids[int(i)%len(ids)], 10)
		t0 := time.Now()
		err := getOK(context.WithoutCancel(ctx), client, url)
		el := time.Since(t0)
		mu.Lock()
		total++
		if err != nil {
			failed++
		} else {
			lat = append(lat, el)
		}
		mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	t0 := time.Now()
	var wg sync.WaitGroup
	if rate == 0 {
		for range workers {
			wg.Go(func() {
				for ctx.Err() == nil {
					one()
				}
			})
		}
	} else {
		sem := make(chan struct{}, workers)
		tick := time.NewTicker(time.Second / time.Duration(rate))
	loop:
		for {
			select {
			case <-ctx.Done():
				break loop
			case <-tick.C:
			}
			select {
			case sem <- struct{}{}:
				wg.Go(func() { defer func() { <-sem }(); one() })
			default: // every worker busy: the shop is slower than the rate
				mu.Lock()
				total++
				failed++
				mu.Unlock()
			}
		}
		tick.Stop()
	}
	wg.Wait()
	took := time.Since(t0)
	slices.Sort(lat)
	res := PageLoad{Requests: total, Failed: failed, Took: took, RPS: float64(len(lat)) / took.Seconds()}
	if n := len(lat); n > 0 {
		res.P50 = lat[(n-1)*50/100]
		res.P99 = lat[(n-1)*99/100]
	}
	return res, nil
}

func getOK(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/html")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
