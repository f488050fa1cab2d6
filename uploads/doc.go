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
// only as sanitised metadata). An [S3Bucket] sends the file as a multipart
// upload in pooled part buffers — at most S3Config.MaxBuffers of them for
// all uploads together — and aborts it on any failure (client gone, too
// large, S3 error), retrying the abort in the background if S3 itself
// failed, so no object and no orphan parts remain. [Status] maps errors to
// HTTP statuses (413, 415, 400, 502).
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
// rendered on the app's origin.
//
// [NewDiskBucket] keeps files in a directory, for development only.
package uploads
