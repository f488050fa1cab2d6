package main

import "github.com/go-chi/chi/v5"

// adminRoutes mounts the shop owner's pages under /admin.
func (s *shop) adminRoutes(r chi.Router) {}
