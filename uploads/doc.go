// Package uploads keeps user files in S3-compatible object storage, so any
// instance can serve any request, with memory that does not grow with the
// files and without leaving partial objects behind or serving stored XSS.
//
// # Through the app
//
// [Store.Receive] streams the file of a multipart/form-data request into
// the [Bucket]: the content type is sniffed from the first 512 bytes and
// checked against an allowlist (never the client's claim), the size is
// counted as it streams (ErrTooLarge above Config.MaxSize), the SHA-256 is
// computed on the way, the key is generated (the client's file name is kept
// only as sanitised metadata); the request's other form fields, before or
// after the file, come back in Stored.Form. An [S3Bucket] sends the file
// as a multipart upload from a pool of part memory — S3Config.MaxBuffers
// parts' worth for all uploads together, handed out 256 KiB at a time as
// bytes arrive, so a slow client holds only what it has sent — and aborts
// it on any failure (client gone, too large, too slow, S3 error, no
// memory), retrying the abort in the background if S3 itself failed, so no
// object and no orphan parts remain. [Status] maps errors to HTTP statuses
// (413, 415, 408, 400, 503, 502).
//
// # Part memory under load
//
// An eighth of the pool is kept for the first 256 KiB of uploads, so a
// small file gets memory however slow clients hold the rest. An upload
// that needs more waits at most S3Config.BufferWait (30s) for it, then is
// refused with [ErrBusy]: 503, with Retry-After set by [Store.Receive]
// ([RetryAfter]), counted as hakit_uploads_total{outcome="busy"}. A slow
// client holds memory only for what it has actually sent, and must send
// Config.MinRate (16 KiB/s) to keep it.
//
// # Bounded by progress, not by time
//
// Uploads and downloads may take as long as they need while they keep
// moving: in every Config.Window of time the server waits on the client,
// at least Config.MinRate × Window bytes must pass (16 KiB/s over 30s by
// default), or the transfer is cut with [ErrTooSlow]. This works through
// the connection's read and write deadlines (http.ResponseController),
// which is why [Store.Receive] takes the ResponseWriter; they also end a
// blocked read or write the moment the request context's deadline passes.
// Give upload and download routes no request timeout (hakit.Timeout(0))
// and let the progress bound end slow clients.
//
// # Straight to S3
//
// [Store.PresignUpload] returns a presigned POST: the browser uploads to
// the bucket directly, S3 enforcing the size (content-length-range), key
// and content type. The object waits under a pending prefix until
// [Store.Confirm] has checked its size, sniffed type and checksum; objects
// never confirmed are removed by [Store.SweepPending].
//
// # Downloads
//
// [Store.Serve] streams an object with Range and If-None-Match support;
// [Store.PresignDownload] hands out a short-lived URL. Both send
// Content-Disposition: attachment for anything but a safe image type
// (JPEG, PNG, GIF, WebP — not SVG), and Serve adds nosniff and a sandboxing
// Content-Security-Policy, so an uploaded HTML or SVG file is never
// rendered on the app's origin. Serve answers every request itself, errors
// included; the error it returns is for logging.
//
// # Error answers
//
// The errors the Store answers by itself (Serve's before the body: 404,
// also for a key no object can have, 416, 502, 503) go through
// Config.ErrorHandler, as do those an app passes to [Store.Error]
// (Receive's 413, 415, 400…). It defaults to [PlainError], the status
// text as plain text; hakit's App.Uploads sets hakit.Error, the app's
// error page. The client never sees the error's own text.
//
// # Metrics
//
// A [Store] is a prometheus.Collector of hakit_uploads_* metrics labelled
// store=Config.Name, so several Stores can share a registry.
//
// [NewDiskBucket] keeps files in a directory, for development only.
package uploads
