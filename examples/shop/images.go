package main

import (
	"context"

	"github.com/go-chi/chi/v5"

	"hakit.dev/jobs"
)

// imageRoutes mounts the product image routes (/images/{id}/{size}).
func (s *shop) imageRoutes(r chi.Router) {}

// registerImageJobs registers the thumbnail jobs on the worker.
func (s *shop) registerImageJobs(w *jobs.Worker) {}

// seedImages makes images for seeded products that have none.
func (s *shop) seedImages(ctx context.Context) error { return nil }

// imageURL returns the URL of a product image in a size ("small", "large"), "" if none.
func (s *shop) imageURL(imageID *int64, size string) string { return "" }
