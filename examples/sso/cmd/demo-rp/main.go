// Command demo-rp is a tiny relying party of the SSO provider, for demos:
// a "Sign in with hakit SSO" page that shows what the ID token says.
//
//	DEMO_ISSUER=http://127.0.0.1:8080 DEMO_CLIENT_ID=demo DEMO_CLIENT_SECRET=… \
//	DEMO_ADDR=127.0.0.1:8090 go run ./cmd/demo-rp
//
// Register it first: go run . client add -id demo -redirect-uri
// http://127.0.0.1:8090/callback -post-logout-uri http://127.0.0.1:8090/
package main

import (
	"log"
	"net/http"
	"os"
	"time"

	"hakit.dev/examples/sso/demorp"
)

func main() {
	addr := os.Getenv("DEMO_ADDR")
	if addr == "" {
		addr = "127.0.0.1:8090"
	}
	base := os.Getenv("DEMO_BASE_URL")
	if base == "" {
		base = "http://" + addr
	}
	rp, err := demorp.New(demorp.Config{Issuer: os.Getenv("DEMO_ISSUER"), ClientID: os.Getenv("DEMO_CLIENT_ID"),
		ClientSecret: os.Getenv("DEMO_CLIENT_SECRET"), BaseURL: base})
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("demo relying party on %s", base)
	srv := &http.Server{Addr: addr, Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
