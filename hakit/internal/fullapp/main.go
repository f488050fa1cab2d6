// Command notes keeps notes with attachments: the app of
// docs/getting-started.md, on every hakit package. Its configuration is
// the environment (HAKIT_* and NOTES_*, see docs/configuration.md).
package main

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"log"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"github.com/jackc/pgx/v5"

	"hakit.dev/dbrouter"
	"hakit.dev/hakit"
	"hakit.dev/jobs"
	"hakit.dev/session"
	"hakit.dev/uploads"
)

//go:embed migrations/*.sql
var migrations embed.FS // the app's tables; hakit adds the library's (outbox, sessions)

func main() {
	ctx := context.Background()
	env := hakit.NewEnv(nil)
	cfg := env.Config() // HAKIT_*: listener, drain, database, Redis, S3, …
	maxMiB := env.Int("NOTES_MAX_FILE_MIB", 100, "largest attachment, in MiB")
	dev := env.Bool("NOTES_DEV", false, "development: session cookie over plain http")
	if err := env.Err(); err != nil {
		log.Fatal(err) // every bad variable, HAKIT_* and NOTES_*, at once
	}
	cfg.Migrations = migrations
	app, err := hakit.New(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	sessions, err1 := app.Sessions(session.Config{Insecure: dev})
	worker, err2 := app.Worker(jobs.WorkerConfig{})
	_, err3 := app.Relay(jobs.RelayConfig{})
	sched, err4 := app.Scheduler(jobs.SchedulerConfig{})
	files, err5 := app.Uploads(uploads.Config{MaxSize: int64(maxMiB) << 20})
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		log.Fatal(err)
	}

	n := &notes{db: app.DB(), sessions: sessions, outbox: jobs.NewOutbox(""), files: files, log: app.Logger()}
	jobs.Handle(worker, "note:words", n.countWords)
	jobs.Handle(worker, "notes:stats", n.stats)
	if err := sched.Add("notes-stats", "@every 1m", "notes:stats", nil, jobs.Options{}); err != nil {
		log.Fatal(err)
	}
	r := app.Router()
	r.Post("/login", n.login)
	r.Get("/me", n.me)
	r.Post("/notes", n.create)
	r.Get("/notes/{id}", n.show)
	r.With(hakit.Timeout(-1), hakit.BodyLimit(int64(maxMiB+1)<<20)).Post("/notes/{id}/attachments", n.attach)
	r.Get("/attachments/{id}", n.download)
	if err := app.Run(ctx); err != nil {
		os.Exit(1) // the log says why
	}
}

// notes is the app: its handlers and its jobs.
type notes struct {
	db       *dbrouter.Router
	sessions *session.Manager
	outbox   *jobs.Outbox
	files    *uploads.Store
	log      *slog.Logger
}

type note struct {
	ID          int64        `json:"id"`
	Author      string       `json:"author"`
	Body        string       `json:"body"`
	Words       *int         `json:"words"` // null until the job has run
	Attachments []attachment `json:"attachments"`
}

type attachment struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
}

// login puts the user on the session: new token, durable write.
func (n *notes) login(w http.ResponseWriter, r *http.Request) {
	if err := hakit.ParseForm(w, r); err != nil {
		hakit.Error(w, r, err) // 413 over the body limit, 400 malformed
		return
	}
	user := r.PostForm.Get("user")
	if user == "" {
		hakit.Error(w, r, &hakit.HTTPError{Status: http.StatusBadRequest, Message: "user is required"})
		return
	}
	if err := n.sessions.Login(r.Context(), user); err != nil {
		hakit.Error(w, r, err)
		return
	}
	http.Redirect(w, r, "/me", http.StatusSeeOther)
}

// me shows what the session holds.
func (n *notes) me(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	writeJSON(w, http.StatusOK, map[string]any{"user": n.sessions.UserID(ctx), "last_note": n.sessions.GetInt64(ctx, "last_note")})
}

// user returns the logged-in user, or answers 401 and returns "".
func (n *notes) user(w http.ResponseWriter, r *http.Request) string {
	user := n.sessions.UserID(r.Context())
	if user == "" {
		hakit.Error(w, r, &hakit.HTTPError{Status: http.StatusUnauthorized, Message: "log in first"})
	}
	return user
}

// create saves a note and, in the same transaction, the job that counts
// its words: the job exists if and only if the note does.
func (n *notes) create(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user := n.user(w, r)
	if user == "" {
		return
	}
	if err := hakit.ParseForm(w, r); err != nil {
		hakit.Error(w, r, err) // a body over the limit is a 413, not an empty note
		return
	}
	body := r.PostForm.Get("body")
	if strings.TrimSpace(body) == "" {
		hakit.Error(w, r, &hakit.HTTPError{Status: http.StatusUnprocessableEntity, Message: "the note is empty"})
		return
	}
	var id int64
	err := n.db.Write(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, "INSERT INTO notes (author, body) VALUES ($1, $2) RETURNING id", user, body).Scan(&id)
		if err != nil {
			return err
		}
		_, err = n.outbox.EnqueueTx(ctx, tx, "note:words", wordsTask{ID: id}, jobs.Options{})
		return err
	})
	if err != nil {
		hakit.Error(w, r, err)
		return
	}
	n.sessions.Put(ctx, "last_note", id)
	writeJSON(w, http.StatusCreated, note{ID: id, Author: user})
}

// show reads from a replica that has the user's own writes: the session
// carries their position. Only the author sees a note: anyone else gets
// the 404 of a note that does not exist.
func (n *notes) show(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user := n.user(w, r)
	if user == "" {
		return
	}
	nt := note{Attachments: []attachment{}}
	err := n.db.Read(ctx, func(q dbrouter.Querier) error {
		err := q.QueryRow(ctx, "SELECT id, author, body, words FROM notes WHERE id = $1 AND author = $2", r.PathValue("id"), user).
			Scan(&nt.ID, &nt.Author, &nt.Body, &nt.Words)
		if err != nil {
			return err
		}
		rows, _ := q.Query(ctx, "SELECT id, name FROM attachments WHERE note_id = $1 ORDER BY id", nt.ID)
		atts, err := pgx.CollectRows(rows, pgx.RowToStructByPos[attachment])
		nt.Attachments = append(nt.Attachments, atts...)
		return err
	})
	if err != nil {
		hakit.Error(w, r, err) // pgx.ErrNoRows: 404; no primary: 503 with Retry-After
		return
	}
	writeJSON(w, http.StatusOK, nt)
}

// attach streams a file to S3 (memory stays flat whatever its size) and
// records it. The login and the note are checked first, so that no file
// is streamed for nothing.
func (n *notes) attach(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user := n.user(w, r)
	if user == "" {
		return
	}
	const mine = "SELECT id FROM notes WHERE id = $1 AND author = $2"
	var noteID int64
	if err := n.db.QueryRow(ctx, mine, r.PathValue("id"), user).Scan(&noteID); err != nil {
		hakit.Error(w, r, err) // pgx.ErrNoRows: 404
		return
	}
	st, err := n.files.Receive(w, r)
	if err != nil {
		hakit.Error(w, r, err) // 413, 415, 408, 400, …
		return
	}
	var id int64
	err = n.db.Write(ctx, func(tx pgx.Tx) error {
		// The note may have gone meanwhile: then no row, a 404.
		return tx.QueryRow(ctx, "INSERT INTO attachments (note_id, key, name, content_type, size) "+
			"SELECT id, $3, $4, $5, $6 FROM ("+mine+") n RETURNING id",
			noteID, user, st.Key, st.Name, st.ContentType, st.Size).Scan(&id)
	})
	if err != nil {
		// ErrCommitUnknown: the row may have committed, and would point at
		// nothing if the file went; an orphan file costs only storage.
		if !errors.Is(err, dbrouter.ErrCommitUnknown) {
			_ = n.files.Bucket().Delete(context.WithoutCancel(ctx), st.Key)
		}
		hakit.Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, attachment{ID: id, Name: st.Name})
}

// download streams an attachment of the user's own notes back, with
// headers that keep an uploaded page or script from running on the app's
// origin.
func (n *notes) download(w http.ResponseWriter, r *http.Request) {
	user := n.user(w, r)
	if user == "" {
		return
	}
	var key, name string
	err := n.db.QueryRow(r.Context(), "SELECT a.key, a.name FROM attachments a JOIN notes n ON n.id = a.note_id "+
		"WHERE a.id = $1 AND n.author = $2", r.PathValue("id"), user).Scan(&key, &name)
	if err != nil {
		hakit.Error(w, r, err) // pgx.ErrNoRows: 404
		return
	}
	// Serve answers its own errors (through the app's error page) and
	// returns them only for logging, which that page already did.
	_ = n.files.Serve(w, r, key, name)
}

type wordsTask struct {
	ID int64 `json:"id"`
}

// countWords runs in the worker. Its read sees the note its enqueuing
// transaction wrote, even on a lagging replica: the task carries the
// commit's position.
func (n *notes) countWords(ctx context.Context, t wordsTask) error {
	var body string
	if err := n.db.QueryRow(ctx, "SELECT body FROM notes WHERE id = $1", t.ID).Scan(&body); err != nil {
		return err
	}
	_, err := n.db.Exec(ctx, "UPDATE notes SET words = $2 WHERE id = $1", t.ID, len(strings.Fields(body)))
	return err
}

// stats runs once a minute across all instances, not once per instance.
func (n *notes) stats(ctx context.Context, _ struct{}) error {
	var count int
	if err := n.db.QueryRow(ctx, "SELECT count(*) FROM notes").Scan(&count); err != nil {
		return err
	}
	n.log.Info("notes", "count", count)
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
