package hatest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// MailpitOptions configures the mail sink started by [StartMailpit] or
// [NewMailpit]. The zero value is usable.
type MailpitOptions struct {
	// MaxMessages is how many messages Mailpit keeps before it deletes
	// the oldest. Defaults to 100000 (Mailpit's own default, 500, is too
	// few for a load test that counts mails).
	MaxMessages int
	// StartTimeout bounds the start. Defaults to 30s.
	StartTimeout time.Duration
}

// Mailpit is a Mailpit server: a real SMTP server on 127.0.0.1 that keeps
// every message it receives (in a temporary database removed by Close) and
// shows them in a web UI and an HTTP API. Code under test sends mail to
// SMTPAddr; the test reads it back with [Mailpit.Messages] and
// [Mailpit.Message].
type Mailpit struct {
	SMTPAddr string // host:port of the SMTP listener (no TLS, no authentication)
	URL      string // http://host:port of the web UI and the API

	d         *daemon
	dir       string
	closeOnce sync.Once
}

// MailAddress is a sender or recipient as Mailpit's API reports it.
type MailAddress struct {
	Name    string `json:"Name"`
	Address string `json:"Address"`
}

// MailSummary is one message in Mailpit's list (GET /api/v1/messages).
type MailSummary struct {
	ID      string        `json:"ID"`        // Mailpit's id, for Message
	Subject string        `json:"Subject"`   // decoded
	From    *MailAddress  `json:"From"`      // nil when the message had none
	To      []MailAddress `json:"To"`        //
	Created time.Time     `json:"Created"`   // when Mailpit received it
	Snippet string        `json:"Snippet"`   // the start of the text
	MsgID   string        `json:"MessageID"` // the Message-ID header
}

// Mail is one message with its bodies (GET /api/v1/message/{id}).
type Mail struct {
	ID      string        `json:"ID"`
	Subject string        `json:"Subject"`
	From    *MailAddress  `json:"From"`
	To      []MailAddress `json:"To"`
	Text    string        `json:"Text"` // the text/plain body, decoded
	HTML    string        `json:"HTML"` // the text/html body, decoded
	MsgID   string        `json:"MessageID"`
}

// StartMailpit starts the mailpit binary found on PATH or in
// $(go env GOPATH)/bin (make deps installs it with go install
// github.com/axllent/mailpit@v1.33.1) with its SMTP and HTTP listeners on
// free loopback ports, and waits until both answer. The caller must Close
// it; tests use [NewMailpit].
func StartMailpit(ctx context.Context, opts MailpitOptions) (_ *Mailpit, err error) {
	defaultTo(&opts.MaxMessages, 100000)
	defaultTo(&opts.StartTimeout, 30*time.Second)
	if opts.MaxMessages < 0 {
		return nil, errors.New("hatest: MailpitOptions.MaxMessages is negative")
	}
	bin, err := binary("mailpit", "github.com/axllent/mailpit@v1.33.1", goBinDirs()...)
	if err != nil {
		return nil, err
	}
	dir, err := runDir("mailpit")
	if err != nil {
		return nil, err
	}
	m := &Mailpit{dir: dir}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	m.d = &daemon{name: "mailpit", path: bin, dir: dir, logPath: filepath.Join(dir, "mailpit.log"),
		// Without a database file Mailpit keeps its messages in a
		// temporary one under TMPDIR: the run directory, removed by
		// Close even when Mailpit was killed.
		env: []string{"TMPDIR=" + dir}}
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	err = m.d.startOnFreePorts(2, func(ports []int) error {
		m.SMTPAddr = hostPort(ports[0])
		m.URL = "http://" + hostPort(ports[1])
		m.d.args = []string{"--smtp", m.SMTPAddr, "--listen", hostPort(ports[1]),
			"--max", strconv.Itoa(opts.MaxMessages), "--disable-version-check",
			"--smtp-disable-rdns", "--quiet"}
		return nil
	}, func() error {
		return m.d.waitReady(ctx, opts.StartTimeout, func(ctx context.Context) error {
			code, err := httpStatus(ctx, m.URL+"/readyz")
			if err != nil {
				return err
			}
			if code != http.StatusOK {
				return errors.New("readyz: " + strconv.Itoa(code))
			}
			return smtpGreets(ctx, m.SMTPAddr)
		})
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// NewMailpit starts a Mailpit for the test (see [StartMailpit]) and stops
// it when the test ends, pass or fail.
func NewMailpit(t testing.TB, opts MailpitOptions) *Mailpit {
	t.Helper()
	skipUnlessServices(t)
	m, err := StartMailpit(context.Background(), opts)
	return register(t, m, err, func() string { return "--- mailpit (" + m.LogPath() + "):\n" + m.d.logTail(20) })
}

// Messages returns every message Mailpit holds, newest first, each once.
// It pages through the API (GET /api/v1/messages) 500 at a time. A listing
// taken while a message is being stored can hold an older message twice
// and lack the new one (seen with Mailpit 1.33): the second copy is
// dropped here, and the new message is in the next listing.
func (m *Mailpit) Messages(ctx context.Context) ([]MailSummary, error) {
	var all []MailSummary
	seen := map[string]bool{}
	for listed := 0; ; {
		var page struct {
			Total    int           `json:"total"`
			Messages []MailSummary `json:"messages"`
		}
		q := url.Values{"start": {strconv.Itoa(listed)}, "limit": {"500"}}
		if err := m.get(ctx, "/api/v1/messages?"+q.Encode(), &page); err != nil {
			return nil, err
		}
		listed += len(page.Messages)
		for _, msg := range page.Messages {
			if !seen[msg.ID] {
				seen[msg.ID] = true
				all = append(all, msg)
			}
		}
		if len(page.Messages) == 0 || listed >= page.Total {
			return all, nil
		}
	}
}

// Message returns one message with its bodies (GET /api/v1/message/{id}).
func (m *Mailpit) Message(ctx context.Context, id string) (Mail, error) {
	var msg Mail
	if id == "" {
		return msg, errors.New("hatest: mailpit: empty message id")
	}
	err := m.get(ctx, "/api/v1/message/"+url.PathEscape(id), &msg)
	return msg, err
}

// DeleteAll deletes every message (DELETE /api/v1/messages).
func (m *Mailpit) DeleteAll(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, m.URL+"/api/v1/messages", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("hatest: mailpit: delete messages: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("hatest: mailpit: delete messages: status %d", resp.StatusCode)
	}
	return nil
}

// get GETs path from the API and decodes its JSON answer into v. A status
// other than 200 is an error with the start of the body.
func (m *Mailpit) get(ctx context.Context, path string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.URL+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("hatest: mailpit: GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("hatest: mailpit: GET %s: status %d: %s", path, resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("hatest: mailpit: GET %s: %w", path, err)
	}
	return nil
}

// smtpGreets connects to an SMTP server and reads its 220 greeting.
func smtpGreets(ctx context.Context, addr string) error {
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("smtp greeting: %w", err)
	}
	if !strings.HasPrefix(line, "220") {
		return fmt.Errorf("smtp greeting: %q", strings.TrimSpace(line))
	}
	return nil
}

// Pid returns the server's process id.
func (m *Mailpit) Pid() int { return m.d.pid() }

// LogPath returns the path of the server's log.
func (m *Mailpit) LogPath() string { return m.d.logPath }

// Close stops the server and removes its messages. It is safe to call
// more than once.
func (m *Mailpit) Close() error {
	var errs []error
	m.closeOnce.Do(func() {
		if m.d != nil {
			errs = append(errs, m.d.kill())
		}
		errs = append(errs, os.RemoveAll(m.dir))
	})
	return errors.Join(errs...)
}
