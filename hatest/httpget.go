package hatest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"time"
)

// httpStatus GETs url, with at most 2s for the whole request, and returns
// the response's status code.
func httpStatus(ctx context.Context, url string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// getJSON GETs url, with at most 2s for the whole request, and decodes
// the JSON body into v whatever the status code.
func getJSON(ctx context.Context, url string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// Patroni answers /patroni with 503 on replicas in some states, with
	// the same JSON body.
	return json.NewDecoder(resp.Body).Decode(v)
}
