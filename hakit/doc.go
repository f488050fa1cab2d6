// Package hakit assembles the hakit packages into one HA-ready application
// server: an [net/http.Server] on a chi router with request IDs, trusted-proxy
// real IPs, panic recovery, access logs, Prometheus metrics, CSRF protection,
// sessions, database routing, background jobs and uploads, plus migrations and
// the drain sequence that lets a load balancer take an instance out before it
// stops.
//
// The assembly is thin on purpose: every package it wires (health, session,
// dbrouter, jobs, uploads) works on its own with any [net/http.Handler].
//
// This package is being built; see the project README for the roadmap.
package hakit
