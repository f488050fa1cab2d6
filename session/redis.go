package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
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
	rdb      redis.UniversalClient
	opts     RedisOptions
	lastWarn atomic.Int64
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
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &RedisStore{rdb: rdb, opts: opts}
}

// deadlineField holds the session's deadline in its hash; it also keeps
// the hash from ever being empty (Redis deletes empty hashes).
const deadlineField = "\x00deadline"

// Load implements Store.
func (s *RedisStore) Load(ctx context.Context, token string) (Record, bool, error) {
	m, err := s.rdb.HGetAll(ctx, s.opts.Prefix+token).Result()
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

// Apply implements Store.
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
		err := s.durably(ctx, key, c.Durable, func(p redis.Pipeliner) {
			p.PExpireAt(ctx, key, c.Expiry)
		}, func(cmds []redis.Cmder) error {
			v, err := cmds[0].(*redis.BoolCmd).Result()
			touched = v
			return err
		})
		return touched, err
	}
	var applied int64
	run := func(eval bool) error {
		return s.durably(ctx, key, c.Durable, func(p redis.Pipeliner) {
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
	err := run(false)
	if err != nil && redis.HasErrorPrefix(errors.Unwrap(err), "NOSCRIPT") {
		// First use on this server (or after a failover or SCRIPT FLUSH):
		// send the script itself once.
		err = run(true)
	}
	return applied == 1, err
}

// Delete implements Store.
func (s *RedisStore) Delete(ctx context.Context, token string, durable bool) error {
	key := s.opts.Prefix + token
	return s.durably(ctx, key, durable, func(p redis.Pipeliner) {
		p.Del(ctx, key)
	}, func(cmds []redis.Cmder) error { return cmds[0].Err() })
}

// durably runs the commands queue adds (on key) and, for a durable
// change, WAIT in the same pipeline (so on the same connection, which WAIT
// is about). On Redis Cluster that pipeline goes to key's master itself: a
// cluster pipeline would send the keyless WAIT to any node.
func (s *RedisStore) durably(ctx context.Context, key string, durable bool, queue func(redis.Pipeliner), check func([]redis.Cmder) error) error {
	wait := durable && s.opts.WaitReplicas > 0
	var p redis.Pipeliner
	if cc, ok := s.rdb.(*redis.ClusterClient); ok && wait {
		master, err := cc.MasterForKey(ctx, key)
		if err != nil {
			return fmt.Errorf("session: redis: the master of %s's slot: %w", s.opts.Prefix+"…", err)
		}
		p = master.Pipeline()
	} else {
		p = s.rdb.Pipeline()
	}
	queue(p)
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
		return fmt.Errorf("session: redis: %w", err)
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
