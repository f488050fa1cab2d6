package hakit

import (
	"errors"
	"mime"
	"mime/multipart"
	"net/http"
)

// MaxFormBytes is the most bytes of body [ParseForm] reads where no
// other limit applies: for an application/x-www-form-urlencoded body
// always (net/http's own limit for such forms, turned into a 413), and for
// a multipart one outside the [Stack] or on a route whose body limit is
// none. 10 MiB.
const MaxFormBytes = 10 << 20

// formMemory is how much of a multipart form's files ParseForm keeps in
// memory; the rest goes to temporary files, which net/http removes when
// the handler returns.
const formMemory = 1 << 20

// ParseForm parses the request's form into r.Form and r.PostForm (and
// r.MultipartForm for a multipart/form-data body), as r.ParseForm and
// r.ParseMultipartForm do, and turns their failures into an *HTTPError
// for [Error]:
//
//   - 413 Request Entity Too Large when the body is over its limit: the
//     Stack's (Config.MaxBodyBytes, or the route's [BodyLimit]), or
//     [MaxFormBytes] (see there);
//   - 400 Bad Request when the body is malformed.
//
// w is used, as by http.MaxBytesReader, to have the server close the
// connection after a body over the limit. A body of another content type
// is left unread, and the form holds the URL's query only. Files are
// better received with the uploads package, which streams them to the
// bucket instead of to temporary files (formMemory: 1 MiB of a multipart
// form's files is kept in memory).
//
//	if err := hakit.ParseForm(w, r); err != nil {
//		hakit.Error(w, r, err) // 413 or 400, through the error page
//		return
//	}
//	title := r.PostForm.Get("title")
func ParseForm(w http.ResponseWriter, r *http.Request) error {
	multi := false
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil {
			return &HTTPError{Status: http.StatusBadRequest, Message: "malformed Content-Type", Err: err}
		}
		multi = mt == "multipart/form-data"
	}
	if r.Body != nil && r.Body != http.NoBody {
		ri := infoOf(r.Context())
		if !multi || ri == nil || ri.bodyLimit <= 0 {
			r.Body = http.MaxBytesReader(w, r.Body, MaxFormBytes)
		}
	}
	var err error
	if multi {
		err = r.ParseMultipartForm(formMemory)
	} else {
		err = r.ParseForm()
	}
	switch {
	case err == nil:
		return nil
	case IsBodyTooLarge(err), errors.Is(err, multipart.ErrMessageTooLarge):
		return &HTTPError{Status: http.StatusRequestEntityTooLarge, Message: "form too large", Err: err}
	default:
		return &HTTPError{Status: http.StatusBadRequest, Message: "malformed form", Err: err}
	}
}
