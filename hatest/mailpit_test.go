package hatest_test

import (
	"context"
	"errors"
	"fmt"
	"net/smtp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"hakit.dev/hatest"
)

func TestMailpitSendListRead(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m := hatest.NewMailpit(t, hatest.MailpitOptions{})
	if !strings.HasPrefix(m.SMTPAddr, "127.0.0.1:") || !strings.HasPrefix(m.URL, "http://127.0.0.1:") {
		t.Fatalf("listeners not on loopback: smtp %s, http %s", m.SMTPAddr, m.URL)
	}
	if msgs, err := m.Messages(ctx); err != nil || len(msgs) != 0 {
		t.Fatalf("fresh Mailpit: %d messages, %v; want none", len(msgs), err)
	}

	const n = 3
	for i := range n {
		body := fmt.Sprintf("To: buyer%d@example.test\r\nFrom: shop@example.test\r\nSubject: Your order #%d\r\n\r\nline %d: 2 x tea\r\n", i, i, i)
		if err := smtp.SendMail(m.SMTPAddr, nil, "shop@example.test", []string{fmt.Sprintf("buyer%d@example.test", i)}, []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	var msgs []hatest.MailSummary
	hatest.WaitFor(t, 10*time.Second, "3 messages in Mailpit", func() bool {
		var err error
		msgs, err = m.Messages(ctx)
		return err == nil && len(msgs) == n
	})
	subjects := map[string]string{}
	for _, s := range msgs {
		subjects[s.Subject] = s.ID
	}
	for i := range n {
		id, ok := subjects[fmt.Sprintf("Your order #%d", i)]
		if !ok {
			t.Fatalf("no message with subject %q in %+v", fmt.Sprintf("Your order #%d", i), msgs)
		}
		msg, err := m.Message(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("line %d: 2 x tea", i); !strings.Contains(msg.Text, want) {
			t.Errorf("message %s text %q lacks %q", id, msg.Text, want)
		}
		if len(msg.To) != 1 || msg.To[0].Address != fmt.Sprintf("buyer%d@example.test", i) {
			t.Errorf("message %s to %+v", id, msg.To)
		}
	}

	// Bad input: an unknown or empty id is an error, not an empty message.
	if _, err := m.Message(ctx, "no-such-id"); err == nil {
		t.Error("Message of an unknown id: no error")
	}
	if _, err := m.Message(ctx, ""); err == nil {
		t.Error("Message of an empty id: no error")
	}

	if err := m.DeleteAll(ctx); err != nil {
		t.Fatal(err)
	}
	if msgs, err := m.Messages(ctx); err != nil || len(msgs) != 0 {
		t.Fatalf("after DeleteAll: %d messages, %v", len(msgs), err)
	}

	// Close stops the server and is safe twice.
	pid := m.Pid()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if hatest.Alive(pid) {
		t.Errorf("mailpit (pid %d) still alive after Close", pid)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestMailpitOptionsRefused(t *testing.T) {
	_, err := hatest.StartMailpit(context.Background(), hatest.MailpitOptions{MaxMessages: -1})
	if err == nil || !strings.Contains(err.Error(), "MaxMessages") {
		t.Fatalf("negative MaxMessages: %v; want an error naming it", err)
	}
}

func TestMailpitMissingNamesTheVersion(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	t.Setenv("GOPATH", t.TempDir())
	t.Setenv("GOBIN", "")
	t.Setenv("HOME", t.TempDir())
	_, err := hatest.StartMailpit(context.Background(), hatest.MailpitOptions{})
	var missing *hatest.MissingBinaryError
	if !errors.As(err, &missing) {
		t.Fatalf("err = %v; want a MissingBinaryError", err)
	}
	if want := "go install github.com/axllent/mailpit@v1.33.1 "; !strings.Contains(err.Error(), want) {
		t.Errorf("%q does not say %q", err, want)
	}
}

// Listing while mail arrives: each listing holds every message once and no
// more messages than were sent (Mailpit can list a message twice while it
// stores another); once the sender is done, all of them.
func TestMailpitListingWhileMailArrives(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m := hatest.NewMailpit(t, hatest.MailpitOptions{})
	const n = 60
	var sent atomic.Int64
	done := make(chan error, 1)
	go func() {
		for i := range n {
			body := fmt.Sprintf("To: r@example.test\r\nFrom: s@example.test\r\nSubject: m%d\r\n\r\nbody %d\r\n", i, i)
			if err := smtp.SendMail(m.SMTPAddr, nil, "s@example.test", []string{"r@example.test"}, []byte(body)); err != nil {
				done <- err
				return
			}
			sent.Add(1)
		}
		done <- nil
	}()
	listings := 0
	for {
		var finished bool
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			finished = true
		default:
		}
		msgs, err := m.Messages(ctx)
		if err != nil {
			t.Fatal(err)
		}
		listings++
		ids := map[string]bool{}
		for _, s := range msgs {
			if ids[s.ID] {
				t.Fatalf("listing %d holds message %s (%s) twice", listings, s.ID, s.Subject)
			}
			ids[s.ID] = true
		}
		if int64(len(msgs)) > sent.Load()+1 { // one may be stored before SendMail returns
			t.Fatalf("listing %d: %d messages of %d sent", listings, len(msgs), sent.Load())
		}
		if finished {
			hatest.WaitFor(t, 10*time.Second, "all messages listed", func() bool {
				msgs, err := m.Messages(ctx)
				return err == nil && len(msgs) == n
			})
			t.Logf("%d listings while %d messages arrived", listings, n)
			return
		}
	}
}
