package uploads

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// PlainError is Config.ErrorHandler's default: it answers err with the
// status [Status] gives and that status's text as plain text ("Not
// Found"), never err's own text, which can carry the bucket's answers.
// On [ErrBusy] it sets Retry-After ([RetryAfter]) if it is not set yet.
func PlainError(w http.ResponseWriter, r *http.Request, err error) {
	if d := RetryAfter(err); d > 0 && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10))
	}
	code := Status(err)
	http.Error(w, http.StatusText(code), code)
}

// Error answers the request with err through Config.ErrorHandler, as
// Serve answers its own errors: for the errors of [Store.Receive] and
// [Store.Confirm], so that an app answers every error of the Store alike.
// Receive has already set Retry-After on ErrBusy. Call it only before
// anything of the response was written.
func (s *Store) Error(w http.ResponseWriter, r *http.Request, err error) {
	if err == nil {
		err = errors.New("uploads: Error called with a nil error")
	}
	s.cfg.ErrorHandler(w, r, err)
}

// maxKeyLen is the longest key S3 allows, in bytes.
const maxKeyLen = 1024

// checkKey returns nil if key can name an object, or else ErrNotFound
// with the reason: a key S3 cannot hold (empty, over 1024 bytes, not
// UTF-8) or one with a control character, which no key the Store makes
// has. The bucket is not asked: such a key, often from a URL, is not an
// object, and not a failure of the bucket.
func checkKey(key string) error {
	why := ""
	switch {
	case key == "":
		why = "empty"
	case len(key) > maxKeyLen:
		why = "over " + strconv.Itoa(maxKeyLen) + " bytes"
	case !utf8.ValidString(key):
		why = "not UTF-8"
	case emptyOrDotSegment(key):
		// S3 itself takes these, but MinIO refuses them (400), and the
		// Store never makes such a key.
		why = "a path with an empty, . or .. segment"
	default:
		for _, c := range key {
			if unicode.IsControl(c) {
				why = "a control character"
				break
			}
		}
	}
	if why == "" {
		return nil
	}
	return fmt.Errorf("%w: the key is %s", ErrNotFound, why)
}

// emptyOrDotSegment reports whether key, split at "/", has an empty, "."
// or ".." segment ("a//b", "/a", "a/", "a/../b").
func emptyOrDotSegment(key string) bool {
	for seg := range strings.SplitSeq(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return true
		}
	}
	return false
}
