package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisOptions configure a RedisStore. The zero value is usable.
type RedisOptions struct {
	// Prefix is put before every session key. Defaults to
	// "hakit:session:".
	Prefix string

	// WaitReplicas is how many replicas must confirm a durable change (a
	// login, a logout, a renewed token) before it counts: Redis
	// replicates asynchronously, so a write the master acknowledged can
	// vanish when Sentinel promotes a replica that had not received it.
	// Defaults to 1; negative turns the confirmation off (a standalone
	// Redis has no replica to wait for). On Redis Cluster the change and
	// its WAIT go together to the master of the session key's hash slot,
	// so they count that shard's replicas.
	WaitReplicas int

	// WaitTimeout bounds that confirmation. Defaults to 100ms. When it
	// passes with fewer replicas confirmed, the change stands and a warning
	// is logged (at most once a minute): the user is not turned away
	// because a replica is slow. The change is then on the master only: if
	// it dies before a replica has it and Sentinel promotes that replica,
	// the change is lost (a login's new session is gone, so the user is
	// signed out; a logout's deletion is undone, so the session is back
	// for whoever holds its cookie). RequireConfirm turns that into an
	// error instead.
	WaitTimeout time.Duration

	// RequireConfirm makes a durable change that fewer than WaitReplicas
	// replicas confirmed within WaitTimeout an error wrapping
	// [ErrNotConfirmed], as if the store were unavailable: a login or a
	// logout answers 503 (Login and Logout return an error wrapping
	// [ErrStoreUnavailable]; a durable save fails with the Manager's
	// Unavailable answer), so the user retries rather than trusting a
	// change a failover could undo. The master has applied the change all
	// the same (Redis cannot take it back): after a refused login the old
	// token is gone too, so the user is anonymous, not logged in; after a
	// refused logout the session is gone from the master. Defaults to
	// false (the change stands, with a warning). No effect when WaitReplicas
	// is negative.
	RequireConfirm bool

	// FailoverWait is how long Load, Apply and Delete keep retrying while
	// no Redis master is reachable, as during a Sentinel failover (the
	// master gone, a replica promoted within a few seconds, go-redis
	// following it) or a Cluster shard's promotion. Retried are the errors
	// that say so: a connection refused, reset or closed, EOF, a failed
	// dial (its timeout included), READONLY (a demoted master), LOADING,
	// MASTERDOWN, CLUSTERDOWN, TRYAGAIN and MOVED; with a backoff from 50ms
	// doubling to 500ms, until FailoverWait has passed since the operation
	// began, and while its context lasts. Retries run on a context that
	// ends then, which ends a dial; a command already sent waits as long
	// as the go-redis client lets it. Any other error (a script error, a
	// read timeout of a server that hangs, go-redis's "all sentinels are
	// unreachable", the context's end) returns at once, and so does a
	// Redis that stays down once FailoverWait has passed: the request
	// then gets the Manager's 503. Defaults to 5s; negative turns the
	// retries off (every error is a 503 at once). Each retried operation
	// counts in [RedisStore.Retried]; a warning is logged at most once a
	// second.
	FailoverWait time.Duration

	// Logger receives those warnings. Defaults to slog.Default().
	Logger *slog.Logger
}

// ErrNotConfirmed is wrapped by the error of a durable change that the
// Redis replicas did not confirm in time, with RedisOptions.RequireConfirm.
var ErrNotConfirmed = errors.New("session: redis: the replicas did not confirm the change in time")

// RedisStore keeps each session as a Redis hash: one field per session key
// (so concurrent requests merge key by key in one atomic script) plus the
// deadline, with the key's expiry set to the session's.
type RedisStore struct {
	rdb           redis.UniversalClient
	opts          RedisOptions
	lastWarn      atomic.Int64
	lastRetryWarn atomic.Int64
	retried       atomic.Int64
}

// NewRedisStore returns a store on rdb: a *redis.Client (plain, or
// redis.NewFailoverClient for Sentinel) or a *redis.ClusterClient.
func NewRedisStore(rdb redis.UniversalClient, opts RedisOptions) *RedisStore {
	if opts.Prefix == "" {
		opts.Prefix = "hakit:session:"
	}
	if opts.WaitReplicas == 0 {
		opts.WaitReplicas = 1
	}
	if opts.WaitTimeout == 0 {
		opts.WaitTimeout = 100 * time.Millisecond
	}
	if opts.FailoverWait == 0 {
		opts.FailoverWait = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &RedisStore{rdb: rdb, opts: opts}
}

// Retried reports how many operations (loads, saves, deletions) have
// been retried because no Redis master was reachable (see
// RedisOptions.FailoverWait), whether or not they succeeded in the end.
// An app can export it, e.g. with prometheus.NewCounterFunc.
func (s *RedisStore) Retried() int64 { return s.retried.Load() }

// masterGone reports whether err means that no Redis master is reachable
// right now, so that the same command can succeed on the master a
// failover promotes.
func masterGone(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) || errors.Is(err, redis.ErrClosed) {
		return false
	}
	// The Sentinels themselves are gone (this wraps their dial errors):
	// no failover is coming.
	if msg := err.Error(); strings.Contains(msg, "all sentinels specified in configuration are unreachable") ||
		strings.Contains(msg, "no sentinels configured") {
		return false
	}
	// A dial that failed (refused, timed out): nothing was sent.
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return true
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) { // go-redis closes the old master's connections on +switch-master
		return true
	}
	if _, moved := redis.IsMovedError(err); moved {
		return true // a Cluster slot now served by the promoted replica
	}
	return redis.IsReadOnlyError(err) || redis.IsLoadingError(err) || redis.IsMasterDownError(err) ||
		redis.IsClusterDownError(err) || redis.IsTryAgainError(err)
}

// Backoff between retries while no master is reachable.
const (
	retryFirst = 50 * time.Millisecond
	retryMax   = 500 * time.Millisecond
)

// retry runs attempt and, while it fails because no master is reachable,
// runs it again with a backoff, until FailoverWait has passed since the
// first attempt began and while ctx lasts. Each retry runs on a context that ends at
// that bound, so a dial to a host that is gone cannot outlast it.
// attempt must be idempotent.
func (s *RedisStore) retry(ctx context.Context, op string, attempt func(context.Context) error) error {
	start := time.Now()
	err := attempt(ctx)
	if err == nil || s.opts.FailoverWait < 0 || !masterGone(err) || ctx.Err() != nil {
		return err
	}
	s.retried.Add(1)
	if now, last := time.Now().UnixNano(), s.lastRetryWarn.Load(); now-last >= int64(time.Second) && s.lastRetryWarn.CompareAndSwap(last, now) {
		s.opts.Logger.Warn("session: no Redis master reachable; retrying (a failover?)",
			"op", op, "err", err, "for", s.opts.FailoverWait, "retried", s.retried.Load())
	}
	rctx, cancel := context.WithDeadline(ctx, start.Add(s.opts.FailoverWait))
	defer cancel()
	for backoff := retryFirst; ; backoff = min(2*backoff, retryMax) {
		timer := time.NewTimer(backoff)
		select {
		case <-rctx.Done():
			timer.Stop()
			if ctx.Err() != nil {
				return fmt.Errorf("%w (retried for %s: %w)", err, time.Since(start).Round(time.Millisecond), ctx.Err())
			}
			return fmt.Errorf("%w (no Redis master for %s)", err, s.opts.FailoverWait)
		case <-timer.C:
		}
		aerr := attempt(rctx)
		if aerr == nil || !masterGone(aerr) {
			if aerr != nil && rctx.Err() != nil && ctx.Err() == nil {
				// The bound ended the attempt: report the outage, not
				// the deadline.
				return fmt.Errorf("%w (no Redis master for %s)", err, s.opts.FailoverWait)
			}
			return aerr
		}
		err = aerr
	}
}

// deadlineField holds the session's deadline in its hash; it also keeps
// the hash from ever being empty (Redis deletes empty hashes).
const deadlineField = "\x00deadline"

// Load implements Store.
func (s *RedisStore) Load(ctx context.Context, token string) (Record, bool, error) {
	var m map[string]string
	err := s.retry(ctx, "load", func(ctx context.Context) error {
		var err error
		m, err = s.rdb.HGetAll(ctx, s.opts.Prefix+token).Result()
		return err
	})
	if err != nil {
		return Record{}, false, fmt.Errorf("session: redis: %w", err)
	}
	d, ok := m[deadlineField]
	if !ok {
		return Record{}, false, nil
	}
	ns, err := strconv.ParseInt(d, 10, 64)
	if err != nil {
		return Record{}, false, fmt.Errorf("%w: bad deadline %q", errCorrupt, d)
	}
	r := Record{Deadline: time.Unix(0, ns).UTC(), Values: make(map[string][]byte, len(m)-1)}
	if !r.Deadline.After(time.Now()) {
		return Record{}, false, nil
	}
	for k, v := range m {
		if k != deadlineField {
			r.Values[k] = []byte(v)
		}
	}
	return r, true, nil
}

// applyScript applies a change atomically. ARGV: mode (replace|merge),
// expiry (unix ms), deadline (unix ns), number of fields to set, then
// field/value pairs, then fields to delete.
var applyScript = redis.NewScript(`
if ARGV[1] == 'merge' and redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[1] == 'replace' then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], '\0deadline', ARGV[3])
local nset = tonumber(ARGV[4])
local i = 5
if nset > 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV, i, i + 2*nset - 1))
  i = i + 2*nset
end
if i <= #ARGV then redis.call('HDEL', KEYS[1], unpack(ARGV, i, #ARGV)) end
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
`)

// Apply implements Store. It is idempotent, so it can be retried after
// an error that leaves unknown whether Redis ran it (a connection lost
// before the reply): the script sets the same fields to the same values
// (a replace deletes and writes the same hash again), a touch sets the
// same expiry. A retried durable change runs its WAIT again, so it is
// confirmed by the replicas of the master that has it now; right after a
// promotion that master often has no replica yet, so with RequireConfirm
// a login or logout in that moment still ends in ErrNotConfirmed (503)
// rather than waiting.
//
// Idempotent alone, not against other writers: when the first attempt
// did reach a master that then failed over, and another request of the
// same session changed the same key on the new master meanwhile, the
// retry writes this request's older value over it (a change to another
// key is not touched). This needs two requests of one session writing one
// key within the failover's seconds; go-redis's own retries had the same
// window, shorter.
func (s *RedisStore) Apply(ctx context.Context, token string, c Change) (bool, error) {
	mode := "merge"
	if c.Replace {
		mode = "replace"
	}
	args := make([]any, 0, 4+2*len(c.Set)+len(c.Unset))
	args = append(args, mode, c.Expiry.UnixMilli(), strconv.FormatInt(c.Deadline.UnixNano(), 10), len(c.Set))
	for k, v := range c.Set {
		args = append(args, k, v)
	}
	for _, k := range c.Unset {
		args = append(args, k)
	}
	key := s.opts.Prefix + token
	if c.Touch() {
		// PEXPIREAT leaves a missing key missing and says so.
		var touched bool
		err := s.retry(ctx, "touch", func(ctx context.Context) error {
			return s.durably(ctx, key, c.Durable, func(ctx context.Context, p redis.Pipeliner) {
				p.PExpireAt(ctx, key, c.Expiry)
			}, func(cmds []redis.Cmder) error {
				v, err := cmds[0].(*redis.BoolCmd).Result()
				touched = v
				return err
			})
		})
		return touched, wrapErr(err)
	}
	var applied int64
	run := func(ctx context.Context, eval bool) error {
		return s.durably(ctx, key, c.Durable, func(ctx context.Context, p redis.Pipeliner) {
			if eval {
				applyScript.Eval(ctx, p, []string{key}, args...)
			} else {
				applyScript.EvalSha(ctx, p, []string{key}, args...)
			}
		}, func(cmds []redis.Cmder) error {
			v, err := cmds[0].(*redis.Cmd).Int64()
			applied = v
			return err
		})
	}
	err := s.retry(ctx, "save", func(ctx context.Context) error {
		err := run(ctx, false)
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			// First use on this server (or after a failover or SCRIPT
			// FLUSH): send the script itself once.
			err = run(ctx, true)
		}
		return err
	})
	return applied == 1, wrapErr(err)
}

// Delete implements Store. Deleting is idempotent, so it is retried like
// Apply.
func (s *RedisStore) Delete(ctx context.Context, token string, durable bool) error {
	key := s.opts.Prefix + token
	return wrapErr(s.retry(ctx, "delete", func(ctx context.Context) error {
		return s.durably(ctx, key, durable, func(ctx context.Context, p redis.Pipeliner) {
			p.Del(ctx, key)
		}, func(cmds []redis.Cmder) error { return cmds[0].Err() })
	}))
}

// wrapErr names the store in err, if any. ErrNotConfirmed says so itself.
func wrapErr(err error) error {
	if err == nil || errors.Is(err, ErrNotConfirmed) {
		return err
	}
	return fmt.Errorf("session: redis: %w", err)
}

// durably runs the commands queue adds (on key) and, for a durable
// change, WAIT in the same pipeline (so on the same connection, which WAIT
// is about). On Redis Cluster that pipeline goes to key's master itself: a
// cluster pipeline would send the keyless WAIT to any node. Its errors are
// go-redis's own, unwrapped, for retry to judge.
func (s *RedisStore) durably(ctx context.Context, key string, durable bool, queue func(context.Context, redis.Pipeliner), check func([]redis.Cmder) error) error {
	wait := durable && s.opts.WaitReplicas > 0
	var p redis.Pipeliner
	cc, cluster := s.rdb.(*redis.ClusterClient)
	if cluster && wait {
		master, err := cc.MasterForKey(ctx, key)
		if err != nil {
			return fmt.Errorf("the master of %s's slot: %w", s.opts.Prefix+"…", err)
		}
		p = master.Pipeline()
	} else {
		p = s.rdb.Pipeline()
	}
	queue(ctx, p)
	var waitCmd *redis.Cmd
	if wait {
		waitCmd = p.Do(ctx, "WAIT", s.opts.WaitReplicas, s.opts.WaitTimeout.Milliseconds())
	}
	cmds, err := p.Exec(ctx)
	if err == nil || errors.Is(err, redis.Nil) {
		err = check(cmds)
	} else if cerr := cmds[0].Err(); cerr != nil {
		err = cerr // the first command's own error (NOSCRIPT) says more
	}
	if err != nil && !errors.Is(err, redis.Nil) {
		if cluster && wait && masterGone(err) {
			// This pipeline went to a node client, which does not
			// reload the slot map by itself: have the cluster client
			// look for the promoted master before the retry.
			cc.ReloadState(ctx)
		}
		return err
	}
	if waitCmd != nil {
		n, err := waitCmd.Int64()
		if s.opts.RequireConfirm && (err != nil || n < int64(s.opts.WaitReplicas)) {
			if err != nil {
				return fmt.Errorf("%w: WAIT: %w", ErrNotConfirmed, err)
			}
			return fmt.Errorf("%w: %d of %d replicas within %s", ErrNotConfirmed, n, s.opts.WaitReplicas, s.opts.WaitTimeout)
		}
		if err == nil && n < int64(s.opts.WaitReplicas) {
			now := time.Now().UnixNano()
			if last := s.lastWarn.Load(); now-last > int64(time.Minute) && s.lastWarn.CompareAndSwap(last, now) {
				s.opts.Logger.Warn("session: a durable change was not confirmed by the Redis replicas in time; it may be lost if the master fails now",
					"want", s.opts.WaitReplicas, "got", n, "timeout", s.opts.WaitTimeout)
			}
		}
	}
	return nil
}

// Ping checks that Redis answers, for readiness checks.
func (s *RedisStore) Ping(ctx context.Context) error { return s.rdb.Ping(ctx).Err() }
