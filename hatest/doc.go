// Package hatest starts real servers for tests: PostgreSQL primaries with
// streaming replicas, PostgreSQL under Patroni with etcd, Redis with
// Sentinels, MinIO (S3), Mailpit (SMTP) and HAProxy, each on 127.0.0.1 on a
// random port, and lets a test break them the way production breaks: kill
// a primary, hang a node, promote a replica, lose the Redis master.
//
// It is to hakit what [net/http/httptest] is to net/http: the project's
// own tests, benchmarks and local lab use it, and so can the tests of any
// application built on hakit. Nothing is mocked.
//
// # Starting services
//
// Each service has two constructors. NewX(t, opts) is for tests: it fails
// the test with the service's log if the service does not come up, stops
// the service when the test ends (pass, fail or panic), and prints the
// service logs of a failed test. StartX(ctx, opts) returns an error and
// leaves Close to the caller, for benchmarks and long-running tools.
//
//	pg := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1})
//	rd := hatest.NewRedis(t, hatest.RedisOptions{Replicas: 1, Sentinels: 3})
//	s3 := hatest.NewMinIO(t, hatest.MinIOOptions{Bucket: "media"})
//	mail := hatest.NewMailpit(t, hatest.MailpitOptions{})
//	lb := hatest.NewHAProxy(t, hatest.HAProxyOptions{Backends: backends})
//
// Every option struct has a useful zero value; each field documents its
// default.
//
// # Breaking things
//
// [PostgresNode] has Kill (SIGKILL of every process: a lost machine), Stop
// (a clean shutdown), Pause and Resume (SIGSTOP/SIGCONT: a hung node whose
// connections stay open), Promote, Rewind (pg_rewind an old primary into a
// replica of the new one), Follow and SetApplyDelay (a lagging replica),
// and reads Role, LSN and Timeline. [PatroniCluster] fails over by itself
// when [PatroniCluster.KillLeader] takes the leader's machine away.
// [RedisCluster.KillMaster] and [RedisCluster.WaitFailover] exercise
// Sentinel; [MinIO] has Kill and Restart with its data kept; [HAProxy]
// reports which backends are up and counts 5xx responses and connection
// errors through its runtime API. [Mailpit] keeps every mail sent to its
// SMTP address and lists them ([Mailpit.Messages], [Mailpit.Message]).
//
// [Process] runs the application's own binaries (built with [Build]) with
// their output in the test log, and signals them as a deployment does.
//
// # Requirements
//
// The servers are the Debian 12 packages postgresql-15, redis-server,
// redis-sentinel, haproxy, patroni and etcd-server, MinIO built with go
// install github.com/minio/minio@latest and Mailpit with go install
// github.com/axllent/mailpit@v1.33.1; the project's make deps installs
// them all. A missing program fails the test with a [MissingBinaryError]
// naming the package to install. Tests skip instead only when
// HAKIT_SKIP_SERVICES=1 is set.
//
// PostgreSQL refuses to run as root: when the harness runs as root it runs
// PostgreSQL and Patroni as the postgres user, in directories that user
// owns. As any other user it runs them as that user.
//
// # Cleaning up
//
// Every server is stopped by Close, and dies with the harness process if
// that is killed first (the kernel's parent-death signal); Patroni's
// PostgreSQL, which Patroni starts detached, is stopped by [SweepOrphans],
// which every Start function runs first. Data lives under the system temp
// directory in hatest-* directories, removed by Close. The harness is
// Linux-only: it reads /proc to find a server's child processes.
package hatest
