package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/jackc/pgx/v5"
	"golang.org/x/oauth2"

	"hakit.dev/hatest"
)

// The services every test of the package shares: one PostgreSQL primary
// with a replica and one Redis. Each test gets its own
// database and Redis database number, so tests stay independent.
var shared struct {
	once    sync.Once
	err     error
	pg      *hatest.PostgresCluster
	rd      *hatest.RedisCluster
	bin     string // this test binary, which runs the app with asApp=1
	dbs     atomic.Int32
	redisDB atomic.Int32
}

// asApp, set in a process's environment, makes the test binary run the
// app's main instead of the tests: the tests start the app from their own
// binary (built with -race when they are), with no second build.
const asApp = "SSO_TEST_AS_APP"

func TestMain(m *testing.M) {
	if os.Getenv(asApp) == "1" {
		main()
		os.Exit(0)
	}
	code := m.Run()
	if shared.pg != nil {
		shared.pg.Close()
	}
	if shared.rd != nil {
		shared.rd.Close()
	}
	os.Exit(code)
}

// services starts the shared services on first use.
func services(t *testing.T) {
	t.Helper()
	if os.Getenv(hatest.EnvSkipServices) == "1" {
		t.Skip(hatest.EnvSkipServices + "=1")
	}
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if shared.pg, shared.err = hatest.StartPostgres(ctx, hatest.PostgresOptions{Replicas: 1}); shared.err != nil {
			return
		}
		if shared.rd, shared.err = hatest.StartRedis(ctx, hatest.RedisOptions{}); shared.err != nil {
			return
		}
		shared.bin, shared.err = os.Executable()
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
}

// cluster is one deployment of the provider under test: its own database,
// any number of instances, optionally behind HAProxy.
type cluster struct {
	t         *testing.T
	pg        *hatest.PostgresCluster
	db        string
	redisURL  string
	issuer    string
	env       []string
	instances []*instance
	lb        *hatest.HAProxy
}

type instance struct {
	addr string
	proc *hatest.Process
}

func (in *instance) url() string { return "http://" + in.addr }

const testSecret = "test-secret-0123456789-abcdefghijklmnop"

// Test clients, registered by SSO_BOOTSTRAP_CLIENTS. a1 and a2 share the
// sector app-a.example; b is another sector; pub is a public client.
var testClients = []clientSpec{
	{ID: "client-a1", Name: "App A", Secret: "secret-a1-0123456789-0123456789-0123456789",
		RedirectURIs: []string{"https://app-a.example/cb"}, PostLogoutRedirectURIs: []string{"https://app-a.example/bye"}},
	{ID: "client-a2", Name: "App A admin", Secret: "secret-a2-0123456789-0123456789-0123456789",
		RedirectURIs: []string{"https://app-a.example:8443/admin/cb"}},
	{ID: "client-b", Name: "App B", Secret: "secret-b-0123456789-0123456789-0123456789",
		RedirectURIs: []string{"https://app-b.example/cb"}},
	{ID: "client-pub", Name: "Public app", Public: true, SubjectType: subjectPublic, AppType: "native",
		RedirectURIs: []string{"http://127.0.0.1/cb"}},
}

// newCluster makes a database and n instances; with lb, HAProxy in front
// (the issuer is then HAProxy's URL).
func newCluster(t *testing.T, n int, lb bool, extraEnv ...string) *cluster {
	services(t)
	return newClusterOn(t, shared.pg, n, lb, extraEnv...)
}

// newClusterOn is newCluster on PostgreSQL cluster pg (its first two
// nodes).
func newClusterOn(t *testing.T, pg *hatest.PostgresCluster, n int, lb bool, extraEnv ...string) *cluster {
	services(t)
	ctx := context.Background()
	c := &cluster{t: t, pg: pg, db: fmt.Sprintf("sso_%d", shared.dbs.Add(1))}
	if err := pg.CreateDatabase(ctx, c.db); err != nil {
		t.Fatal(err)
	}
	if err := pg.WaitReplicated(ctx); err != nil { // the replica has the database too
		t.Fatal(err)
	}
	c.redisURL = fmt.Sprintf("redis://%s/%d", shared.rd.Addr(), shared.redisDB.Add(1)%16)
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = freeAddr(t)
	}
	if lb {
		backends := make([]hatest.Backend, n)
		for i, a := range addrs {
			backends[i] = hatest.Backend{Addr: a}
		}
		c.lb = hatest.NewHAProxy(t, hatest.HAProxyOptions{Backends: backends, Inter: 200 * time.Millisecond,
			Redispatch: true})
		c.issuer = c.lb.URL
	} else {
		c.issuer = "http://" + addrs[0]
	}
	boot, _ := json.Marshal(testClients)
	c.env = append([]string{
		asApp + "=1",
		"HAKIT_DATABASE_URL_1=" + pg.Nodes[0].DSNFor(c.db),
		"HAKIT_DATABASE_URL_2=" + pg.Nodes[1].DSNFor(c.db),
		"HAKIT_REDIS_URL=" + c.redisURL,
		"HAKIT_REDIS_NO_REPLICAS=true",
		"HAKIT_DRAIN_DELAY=0",
		"HAKIT_TRUSTED_PROXIES=127.0.0.1",
		"SSO_ISSUER=" + c.issuer,
		"SSO_SECRET=" + testSecret,
		"SSO_DEV=true",
		"SSO_ARGON2_MEMORY_KIB=1024",
		"SSO_ARGON2_TIME=1",
		"SSO_ARGON2_THREADS=1",
		"SSO_ADMIN_EMAILS=admin@example.com",
		"SSO_BOOTSTRAP_CLIENTS=" + string(boot),
	}, extraEnv...)
	for i, a := range addrs {
		c.instances = append(c.instances, c.start(i, a))
	}
	for _, in := range c.instances {
		waitReady(t, in.url())
	}
	if lb {
		for _, b := range c.lb.Backends {
			if err := c.lb.WaitServerStatus(ctx, b.Name, "UP"); err != nil {
				t.Fatal(err)
			}
		}
	}
	return c
}

// start runs instance i on addr.
func (c *cluster) start(i int, addr string) *instance {
	p := hatest.NewProcess(c.t, hatest.ProcessOptions{Name: fmt.Sprintf("sso%d", i), Path: shared.bin,
		Env: append([]string{"HAKIT_ADDR=" + addr}, c.env...)})
	return &instance{addr: addr, proc: p}
}

// restart stops instance i (SIGTERM) and starts it again on its address.
func (c *cluster) restart(i int) {
	in := c.instances[i]
	if err := in.proc.Stop(10 * time.Second); err != nil {
		c.t.Fatal(err)
	}
	c.instances[i] = c.start(i, in.addr)
	waitReady(c.t, in.url())
}

// conn connects to the cluster's database on the current primary.
func (c *cluster) conn() *pgx.Conn {
	c.t.Helper()
	ctx := context.Background()
	p, err := c.pg.Primary(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, p.DSNFor(c.db))
	if err != nil {
		c.t.Fatal(err)
	}
	return conn
}

// sql runs a statement on the cluster's database, on the primary.
func (c *cluster) sql(q string, args ...any) {
	c.t.Helper()
	ctx := context.Background()
	conn := c.conn()
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, q, args...); err != nil {
		c.t.Fatal(err)
	}
}

// queryInt runs a query returning one number, on the primary.
func (c *cluster) queryInt(q string, args ...any) int {
	c.t.Helper()
	ctx := context.Background()
	conn := c.conn()
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, q, args...).Scan(&n); err != nil {
		c.t.Fatal(err)
	}
	return n
}

// cli runs the binary with args against the cluster's database.
func (c *cluster) cli(args ...string) (string, error) {
	cmd := exec.Command(shared.bin, args...)
	cmd.Env = append(os.Environ(), c.env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitReady(t *testing.T, base string) {
	t.Helper()
	hatest.WaitFor(t, 60*time.Second, base+"/readyz", func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// ---- a relying party and a browser

// rp is a relying party using the standard client libraries.
type rp struct {
	spec     clientSpec
	conf     *oauth2.Config
	provider *oidc.Provider
	verifier *oidc.IDTokenVerifier
}

func (c *cluster) rp(id string) *rp {
	c.t.Helper()
	var spec clientSpec
	for _, s := range testClients {
		if s.ID == id {
			spec = s
		}
	}
	if spec.ID == "" {
		c.t.Fatalf("no test client %s", id)
	}
	return c.rpFor(spec)
}

func (c *cluster) rpFor(spec clientSpec) *rp {
	c.t.Helper()
	ctx := oidc.ClientContext(context.Background(), &http.Client{Timeout: 10 * time.Second})
	p, err := oidc.NewProvider(ctx, c.issuer)
	if err != nil {
		c.t.Fatal(err)
	}
	ep := p.Endpoint()
	ep.AuthStyle = oauth2.AuthStyleInHeader
	return &rp{
		spec:     spec,
		provider: p,
		verifier: p.Verifier(&oidc.Config{ClientID: spec.ID}),
		conf: &oauth2.Config{ClientID: spec.ID, ClientSecret: spec.Secret, Endpoint: ep,
			RedirectURL: spec.RedirectURIs[0], Scopes: []string{oidc.ScopeOpenID, "email", "profile", oidc.ScopeOfflineAccess}},
	}
}

// browser is a user agent with cookies that stops at redirects leaving
// the provider (to a client's redirect URI).
type browser struct {
	t      *testing.T
	c      *cluster
	client *http.Client
}

func (c *cluster) browser() *browser {
	jar, _ := cookiejar.New(nil)
	b := &browser{t: c.t, c: c}
	b.client = &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if !strings.HasPrefix(req.URL.String(), c.issuer) {
				return http.ErrUseLastResponse
			}
			return nil
		}}
	return b
}

// page is an answer the browser got.
type pageResp struct {
	status   int
	url      *url.URL // the URL it was answered from (after redirects)
	location string   // a redirect out of the provider, if any
	body     string
}

func (b *browser) do(req *http.Request) pageResp {
	b.t.Helper()
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	p := pageResp{status: resp.StatusCode, url: resp.Request.URL, body: string(body)}
	if resp.StatusCode/100 == 3 {
		p.location = resp.Header.Get("Location")
	}
	return p
}

func (b *browser) get(u string) pageResp {
	b.t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	return b.do(req)
}

func (b *browser) post(u string, form url.Values) pageResp {
	b.t.Helper()
	if !strings.HasPrefix(u, "http") {
		u = b.c.issuer + u
	}
	req, _ := http.NewRequest("POST", u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

// flow is one authorization request's parameters.
type flow struct {
	state, nonce, verifier string
	extra                  []oauth2.AuthCodeOption
}

func newFlow() *flow {
	return &flow{state: rand.Text(), nonce: rand.Text(), verifier: oauth2.GenerateVerifier()}
}

func (r *rp) authURL(f *flow) string {
	opts := append([]oauth2.AuthCodeOption{oauth2.S256ChallengeOption(f.verifier), oidc.Nonce(f.nonce)}, f.extra...)
	return r.conf.AuthCodeURL(f.state, opts...)
}

var authRequestIDRe = regexp.MustCompile(`name="authRequestID" value="([^"]+)"`)

// authorize starts a flow and returns the page the provider shows (a
// login or consent page), or the redirect to the client.
func (b *browser) authorize(r *rp, f *flow) pageResp {
	b.t.Helper()
	return b.get(r.authURL(f))
}

func formID(t *testing.T, p pageResp) string {
	t.Helper()
	m := authRequestIDRe.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no authRequestID on the page (%d %s): %.400s", p.status, p.url, p.body)
	}
	return m[1]
}

// login completes a flow for an existing account (register: a new one)
// up to the client's redirect, consenting if asked, and returns the code.
func (b *browser) login(r *rp, f *flow, email, password string, register bool) string {
	b.t.Helper()
	p := b.authorize(r, f)
	if p.location == "" {
		id := formID(b.t, p)
		if register {
			p = b.post("/register", url.Values{"authRequestID": {id}, "email": {email}, "name": {"Test User"},
				"password": {password}, "password2": {password}})
		} else if strings.Contains(p.url.Path, "/login") {
			p = b.post("/login", url.Values{"authRequestID": {id}, "email": {email}, "password": {password}})
		}
	}
	if p.location == "" && strings.Contains(p.url.Path, "/consent") {
		p = b.post("/consent", url.Values{"authRequestID": {formID(b.t, p)}, "decision": {"allow"}})
	}
	return b.codeFrom(r, f, p)
}

// codeFrom checks a redirect to the client and returns its code.
func (b *browser) codeFrom(r *rp, f *flow, p pageResp) string {
	b.t.Helper()
	if p.location == "" {
		b.t.Fatalf("no redirect to the client: %d %s: %.600s", p.status, p.url, p.body)
	}
	u, err := url.Parse(p.location)
	if err != nil {
		b.t.Fatal(err)
	}
	if got := u.Scheme + "://" + u.Host + u.Path; got != r.conf.RedirectURL {
		b.t.Fatalf("redirected to %s, not the registered %s", p.location, r.conf.RedirectURL)
	}
	q := u.Query()
	if e := q.Get("error"); e != "" {
		b.t.Fatalf("error redirect: %s: %s", e, q.Get("error_description"))
	}
	if q.Get("state") != f.state {
		b.t.Fatalf("state %q came back as %q", f.state, q.Get("state"))
	}
	return q.Get("code")
}

// tokens is a successful token response, verified.
type tokens struct {
	tok     *oauth2.Token
	idToken *oidc.IDToken
	raw     string
}

// exchange redeems a code with the standard client and verifies the ID
// token against the provider's JWKS, and its nonce.
func (r *rp) exchange(t *testing.T, f *flow, code string) (*tokens, error) {
	t.Helper()
	ctx := oidc.ClientContext(context.Background(), &http.Client{Timeout: 10 * time.Second})
	tok, err := r.conf.Exchange(ctx, code, oauth2.VerifierOption(f.verifier))
	if err != nil {
		return nil, err
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := r.verifier.Verify(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("ID token does not verify: %w", err)
	}
	if idt.Nonce != f.nonce {
		return nil, fmt.Errorf("nonce %q, want %q", idt.Nonce, f.nonce)
	}
	return &tokens{tok: tok, idToken: idt, raw: raw}, nil
}

func (r *rp) mustExchange(t *testing.T, f *flow, code string) *tokens {
	t.Helper()
	tk, err := r.exchange(t, f, code)
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	return tk
}

// userinfo returns the userinfo's sub, or the HTTP status of a failure.
func (r *rp) userinfo(t *testing.T, access string) (string, int) {
	t.Helper()
	req, _ := http.NewRequest("GET", r.provider.UserInfoEndpoint(), nil)
	req.Header.Set("Authorization", "Bearer "+access)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ui struct {
		Sub string `json:"sub"`
	}
	if resp.StatusCode != 200 {
		return "", resp.StatusCode
	}
	if err := json.NewDecoder(resp.Body).Decode(&ui); err != nil {
		t.Fatal(err)
	}
	return ui.Sub, 200
}

// tokenRequest posts to the token endpoint at base (the issuer or one
// instance) and returns the status and the JSON answer.
func (r *rp) tokenRequest(t *testing.T, base string, form url.Values) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", base+"/oauth/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if r.spec.Secret != "" {
		req.SetBasicAuth(url.QueryEscape(r.spec.ID), url.QueryEscape(r.spec.Secret))
	} else {
		form.Set("client_id", r.spec.ID)
		req.Body = io.NopCloser(strings.NewReader(form.Encode()))
		req.ContentLength = int64(len(form.Encode()))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// decodeSegment decodes one base64url JSON segment of a JWT into v.
func decodeSegment(t *testing.T, seg string, v any) {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err == nil {
		err = json.Unmarshal(b, v)
	}
	if err != nil {
		t.Fatalf("JWT segment %q: %v", seg, err)
	}
}

func codeForm(code, verifier, redirect string) url.Values {
	return url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier}, "redirect_uri": {redirect}}
}
