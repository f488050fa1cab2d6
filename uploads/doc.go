// Package uploads stores user files in S3-compatible object storage so any
// instance can serve any request: multipart uploads streamed through the app
// with bounded memory, presigned direct uploads with a confirm step, and
// downloads that cannot turn an upload into stored XSS.
//
// This package is being built; see the project README for the roadmap.
package uploads
