package session

import (
	"context"
	"encoding/json"
)

// FlashMessage is a message for the next page the user sees ("Note
// saved."), kept in the session until a handler takes it with
// [Manager.Flashes].
type FlashMessage struct {
	// Kind says how to show it: "info", "error", or anything the app's
	// templates know. Free-form.
	Kind string `json:"k"`
	// Text is the message, as the user reads it (templates escape it).
	Text string `json:"t"`
}

// flashKey is the session key of the pending flash messages, kept as
// JSON text (no gob registration needed).
const flashKey = "_hakit_flash"

// maxFlashes bounds the pending messages of a session: past it the oldest
// are dropped, so a form posted again and again with no page to show its
// messages does not grow the session.
const maxFlashes = 16

// Flash adds a message for the next page that calls [Manager.Flashes]:
// after a POST, before the redirect (Post/Redirect/Get). Messages wait in
// the session, in order, until taken, at most 16 (the oldest are dropped
// past that). Concurrent requests of one session that both add a flash
// keep one of the two lists (they change the same key; see the package
// doc).
func (m *Manager) Flash(ctx context.Context, kind, text string) {
	msgs := m.flashes(ctx)
	msgs = append(msgs, FlashMessage{Kind: kind, Text: text})
	if len(msgs) > maxFlashes {
		msgs = msgs[len(msgs)-maxFlashes:]
	}
	b, _ := json.Marshal(msgs) // strings only: cannot fail
	m.Put(ctx, flashKey, string(b))
}

// Flashes returns the pending flash messages, oldest first, and removes
// them from the session: a page shows them once, and a reload does not
// show them again. It returns nil when there are none (and then leaves
// the session unchanged).
func (m *Manager) Flashes(ctx context.Context) []FlashMessage {
	if !m.Exists(ctx, flashKey) {
		return nil
	}
	msgs := m.flashes(ctx)
	m.Remove(ctx, flashKey)
	return msgs
}

// flashes decodes the pending messages; an undecodable value counts as
// none.
func (m *Manager) flashes(ctx context.Context) []FlashMessage {
	s := m.GetString(ctx, flashKey)
	if s == "" {
		return nil
	}
	var msgs []FlashMessage
	if json.Unmarshal([]byte(s), &msgs) != nil {
		return nil
	}
	return msgs
}
