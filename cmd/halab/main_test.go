package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"hakit.dev/hatest"
)

// TestLabUpChaosDown runs the lab as make demo does, uses a chaos command
// through its prompt, and stops it with SIGTERM: it must exit 0 and leave
// no directory (and so no server) behind.
func TestLabUpChaosDown(t *testing.T) {
	if os.Getenv(hatest.EnvSkipServices) == "1" {
		t.Skip("HAKIT_SKIP_SERVICES=1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	bin := hatest.Build(t, ".")
	stdin, cmds := io.Pipe()
	defer cmds.Close()
	p := hatest.NewProcess(t, hatest.ProcessOptions{Path: bin, Args: []string{"-apps", "2"}, Stdin: stdin})
	if err := p.WaitOutput(ctx, "halab: ready"); err != nil {
		t.Fatal(err)
	}
	out := p.Output()
	for _, want := range []string{"postgres patroni0", "leader (primary)", "redis sentinels", "minio (S3)", "access key hatest", "haproxy", "lab app1"} {
		if !strings.Contains(out, want) {
			t.Errorf("endpoint table lacks %q:\n%s", want, out)
		}
	}
	m := regexp.MustCompile(`(?m)^haproxy\s+(http://\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no HAProxy URL in:\n%s", out)
	}
	resp, err := http.Get(m[1])
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "postgres leader: patroni") {
		t.Fatalf("lab page through HAProxy: %d %q", resp.StatusCode, body)
	}

	fmt.Fprintln(cmds, "drain app0")
	if err := p.WaitOutput(ctx, "app0 /readyz now answers 503"); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(cmds, "kill-redis-master")
	if err := p.WaitOutput(ctx, "is the new Redis master"); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(cmds, "bogus")
	if err := p.WaitOutput(ctx, `unknown command "bogus"`); err != nil {
		t.Fatal(err)
	}

	if err := p.Terminate(); err != nil {
		t.Fatal(err)
	}
	code, err := p.Wait(ctx)
	if err != nil || code != 0 {
		t.Fatalf("halab exit code %d, %v; want 0\n%s", code, err, p.Output())
	}
	if !strings.Contains(p.Output(), "halab: stopped") {
		t.Fatalf("halab did not report a clean stop:\n%s", p.Output())
	}
	// Every run dir of the lab is gone.
	owners, _ := filepath.Glob(filepath.Join(os.TempDir(), "hatest-*", ".hatest-owner"))
	for _, o := range owners {
		b, _ := os.ReadFile(o)
		if pid, _, _ := strings.Cut(string(b), " "); pid == strconv.Itoa(p.Pid()) {
			t.Errorf("halab left %s behind", filepath.Dir(o))
		}
	}
}

// TestLabRunsTheShop runs the lab with two shop instances and one of the
// SSO provider, checks both answer through their HAProxy, and uses the
// apps' chaos commands (old and new forms) and the load through the
// prompt.
func TestLabRunsTheShop(t *testing.T) {
	if os.Getenv(hatest.EnvSkipServices) == "1" {
		t.Skip("HAKIT_SKIP_SERVICES=1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	bin := hatest.Build(t, ".")
	stdin, cmds := io.Pipe()
	defer cmds.Close()
	p := hatest.NewProcess(t, hatest.ProcessOptions{Path: bin, Args: []string{"-shop", "2", "-sso", "1", "-pg", "1"}, Stdin: stdin})
	if err := p.WaitOutput(ctx, "halab: ready"); err != nil {
		t.Fatal(err)
	}
	out := p.Output()
	for _, want := range []string{"mailpit", "web UI", "admin login admin@example.test", "shop shop1",
		"sso (OpenID provider)", "client_id demo", "client_id shop", "sso sso0", "master name \"sso\"", "/sso?sslmode"} {
		if !strings.Contains(out, want) {
			t.Errorf("endpoint table lacks %q:\n%s", want, out)
		}
	}
	m := regexp.MustCompile(`(?m)^shop\s+(http://\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no shop URL in:\n%s", out)
	}
	resp, err := http.Get(m[1] + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `data-page="home"`) {
		t.Fatalf("shop home page through HAProxy: %d %.300q", resp.StatusCode, body)
	}

	m = regexp.MustCompile(`(?m)^sso \(OpenID provider\)\s+(http://\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no SSO URL in:\n%s", out)
	}
	resp, err = http.Get(m[1] + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var disc struct {
		Issuer string `json:"issuer"`
	}
	err = json.NewDecoder(resp.Body).Decode(&disc)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || disc.Issuer != m[1] {
		t.Fatalf("SSO discovery through HAProxy: %d, issuer %q, %v; want %s", resp.StatusCode, disc.Issuer, err, m[1])
	}

	step := func(cmd, want string) {
		t.Helper()
		fmt.Fprintln(cmds, cmd)
		if err := p.WaitOutput(ctx, want); err != nil {
			t.Fatal(err)
		}
	}
	step("load on", "req/s")
	// The login load signs in through the whole code flow.
	if err := p.WaitOutput(ctx, "logins/s  100.00% ok"); err != nil {
		t.Fatal(err)
	}
	step("kill-app shop1", "killed shop1 (kill -9)")
	step("kill-app shop1", "shop1 is not running")
	step("start-app shop1", "shop1 is up behind HAProxy again")
	step("kill-app sso", "killed sso0 (kill -9)")
	step("start-app sso sso0", "sso0 is up behind HAProxy again")
	step("rolling-restart", "rolling restart of the shop done")
	step("load off", "load: stopped")
	step("kill-app nosuch", `no app instance "nosuch"`)
	step("load maybe", "load needs on or off")

	if err := p.Terminate(); err != nil {
		t.Fatal(err)
	}
	code, err := p.Wait(ctx)
	if err != nil || code != 0 {
		t.Fatalf("halab exit code %d, %v; want 0\n%s", code, err, p.Output())
	}
	if !strings.Contains(p.Output(), "halab: stopped") {
		t.Fatalf("halab did not report a clean stop:\n%s", p.Output())
	}
}
