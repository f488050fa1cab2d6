package uploads_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"

	"hakit.dev/uploads"
)

func Example() {
	dir, _ := os.MkdirTemp("", "uploads-example")
	defer os.RemoveAll(dir)
	// In production: uploads.NewS3Bucket(uploads.S3Config{Endpoint: …, Bucket: …, …}).
	bucket, err := uploads.NewDiskBucket(dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	store, err := uploads.New(uploads.Config{Bucket: bucket, MaxSize: 10 << 20, Logger: quiet()})
	if err != nil {
		fmt.Println(err)
		return
	}
	upload := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		file, err := store.Receive(w, r)
		if err != nil {
			http.Error(w, err.Error(), uploads.Status(err))
			return
		}
		json.NewEncoder(w).Encode(file) // record file.Key, .SHA256 … in the database
	})

	send := func(name string, content []byte) {
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		fw, _ := mw.CreateFormFile("file", name)
		fw.Write(content)
		mw.Close()
		req := httptest.NewRequest("POST", "/upload", &body)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		rec := httptest.NewRecorder()
		upload.ServeHTTP(rec, req)
		var got uploads.Stored
		json.Unmarshal(rec.Body.Bytes(), &got)
		fmt.Println(rec.Code, got.Name, got.ContentType, got.Size)
	}
	send("../../cat.png", append([]byte("\x89PNG\r\n\x1a\n"), make([]byte, 100)...))
	send("cat.png", []byte("<html><script>alert(1)</script></html>"))
	// Output:
	// 200 cat.png image/png 108
	// 415   0
}
