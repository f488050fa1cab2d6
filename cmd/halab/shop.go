package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"hakit.dev/hatest"
)

// shopLab runs the shop example's instances behind the lab's HAProxy, and
// the scripted-customer load (examples/shop/cmd/shopload) on demand.
type shopLab struct {
	*appGroup
	loadBin  string // shopload
	admin    string // the admin account's password
	loadProc *hatest.Process
}

// build compiles the shop and shopload, and makes the admin password.
func (s *shopLab) build(ctx context.Context, shopDir string) error {
	dir, err := moduleDir(shopDir, "shop")
	if err != nil {
		return err
	}
	if err := s.appGroup.build(ctx, dir, [2]string{"shop", "."}, [2]string{"shopload", "./cmd/shopload"}); err != nil {
		return err
	}
	s.loadBin = filepath.Join(s.dir, "shopload")
	s.admin = rand.Text()[:16]
	return nil
}

// shopEnv is an instance's environment, pointing at the lab's services
// and, when the lab runs it, the SSO provider.
func (s *shopLab) shopEnv(in *appInstance) []string {
	l := s.lab
	env := []string{
		"HAKIT_ADDR=" + in.addr,
		"HAKIT_DRAIN_DELAY=" + appDrainDelay.String(),
		"HAKIT_REDIS_SENTINELS=" + strings.Join(l.redis.SentinelAddrs(), ","),
		"HAKIT_REDIS_MASTER=" + l.redis.MasterName,
		"HAKIT_S3_ENDPOINT=" + l.minio.Endpoint,
		"HAKIT_S3_REGION=" + l.minio.Region,
		"HAKIT_S3_BUCKET=" + l.minio.Bucket,
		"HAKIT_S3_ACCESS_KEY_ID=" + l.minio.AccessKey,
		"HAKIT_S3_SECRET_ACCESS_KEY=" + l.minio.SecretKey,
		"HAKIT_S3_PATH_STYLE=true",
		"SHOP_SMTP_ADDR=" + l.mail.SMTPAddr,
		"SHOP_SEED=true",
		"SHOP_DEV=true",
		"SHOP_ADMIN_EMAIL=admin@example.test",
		"SHOP_ADMIN_PASSWORD=" + s.admin,
	}
	if l.sso != nil {
		env = append(env,
			"SHOP_SSO_ISSUER="+l.sso.issuer(),
			"SHOP_SSO_CLIENT_ID="+shopClientID,
			"SHOP_SSO_CLIENT_SECRET="+l.sso.shopSecret,
			"SHOP_BASE_URL="+s.lb.URL,
		)
	}
	for i, dsn := range l.pg.DSNs() {
		env = append(env, fmt.Sprintf("HAKIT_DATABASE_URL_%d=%s", i+1, dsn))
	}
	return env
}

// table adds the shop's rows to the endpoint table.
func (s *shopLab) table(tw *tabwriter.Writer) {
	fmt.Fprintf(tw, "shop\t%s\tthrough HAProxy; admin login admin@example.test / %s at %s/admin\n", s.lb.URL, s.admin, s.lb.URL)
	instanceRows(tw, s.appGroup)
}

// instanceRows adds a row per instance of g to the endpoint table.
func instanceRows(tw *tabwriter.Writer, g *appGroup) {
	for _, in := range g.insts {
		state := "running"
		if !g.running(in) {
			state = "down"
		}
		fmt.Fprintf(tw, "%s %s\thttp://%s\t%s; log %s\n", g.id, in.name, in.addr, state, in.logPath)
	}
}

// loadOn starts shopload against HAProxy; its live lines go to the lab's
// output.
func (s *shopLab) loadOn() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.loadProc != nil && !s.loadProc.Exited() {
		return errors.New("the load is already on (load off stops it)")
	}
	pr, pw := io.Pipe()
	p, err := hatest.StartProcess(hatest.ProcessOptions{Name: "load", Path: s.loadBin, Output: pw,
		Args: []string{"-url", s.lb.URL, "-customers", "8", "-rate", "40", "-duration", "30m", "-interval", "2s", "-json"}})
	if err != nil {
		pw.Close()
		return err
	}
	s.loadProc = p
	go func() {
		<-p.Done()
		pw.Close()
	}()
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := strings.TrimPrefix(sc.Text(), "[load] ")
			if smp, text, ok := parseLoadLine(line); ok {
				s.lab.loadSample(smp)
				line = text
			}
			s.lab.say(line)
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	return nil
}

func (s *shopLab) loadRunning() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loadProc != nil && !s.loadProc.Exited()
}

func (s *shopLab) loadOff() error {
	s.mu.Lock()
	p := s.loadProc
	s.loadProc = nil
	s.mu.Unlock()
	if p == nil || p.Exited() {
		return errors.New("the load is off (load on starts it)")
	}
	return p.Stop(15 * time.Second)
}

// close stops the load and the instances.
func (s *shopLab) close() error {
	s.mu.Lock()
	p := s.loadProc
	s.mu.Unlock()
	return s.stop(p)
}
