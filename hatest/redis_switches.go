package hatest

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// UnplannedFailoverError reports that the Sentinels moved the Redis master
// when the harness expected them not to: more than one failover before
// [RedisCluster.WaitFailover] returned, or any while
// [RedisCluster.WaitReplica] waited. A test that sees it did not cause the
// failover; the Sentinels took a master for down (Events tells why).
type UnplannedFailoverError struct {
	// Expected says what the harness expected, e.g. "WaitFailover
	// expected one failover since redis0 became the master".
	Expected string
	// Switches are the master switches the Sentinels logged since that
	// master, oldest first, e.g. "redis1 -> redis0 at 22:51:09.337".
	Switches []string
	// Events are the Sentinels' log lines about the master (+sdown,
	// +odown, +elected-leader, +switch-master, …), each prefixed with the
	// Sentinel's name.
	Events string
}

func (e *UnplannedFailoverError) Error() string {
	return fmt.Sprintf("hatest: unplanned Redis failover: %s, but the Sentinels moved the master: %s\nthe Sentinels' master events:\n%s",
		e.Expected, strings.Join(e.Switches, ", then "), e.Events)
}

// masterSwitch is one +switch-master event of a Sentinel's log: the master
// moved from one address to another.
type masterSwitch struct {
	from, to string // host:port
	at       string // the log line's time of day
}

// parseSwitches returns the +switch-master events for the master called
// name in a Sentinel's log lines, e.g.
//
//	14288:X 30 Nov 2026 22:51:09.337 # +switch-master hatest 127.0.0.1 37555 127.0.0.1 36991
func parseSwitches(log, name string) []masterSwitch {
	var out []masterSwitch
	for line := range strings.SplitSeq(log, "\n") {
		i := strings.Index(line, "+switch-master ")
		if i < 0 {
			continue
		}
		f := strings.Fields(line[i:])
		if len(f) != 6 || f[1] != name {
			continue
		}
		sw := masterSwitch{from: f[2] + ":" + f[3], to: f[4] + ":" + f[5]}
		if pre := strings.Fields(line[:i]); len(pre) >= 5 {
			sw.at = pre[4]
		}
		out = append(out, sw)
	}
	return out
}

// switches returns the master switches the Sentinels have logged since
// the cluster started: the longest history any Sentinel has (a Sentinel
// that was down when the master moved logs one switch to where the master
// is now, not each one it missed). Each call reads only what the logs
// gained since the last.
func (c *RedisCluster) switches() []masterSwitch {
	c.mu.Lock()
	defer c.mu.Unlock()
	var longest []masterSwitch
	for _, s := range c.Sentinels {
		s.readSwitches(c.MasterName)
		if len(s.switches) > len(longest) {
			longest = s.switches
		}
	}
	return append([]masterSwitch(nil), longest...)
}

// readSwitches reads the Sentinel's log from where it stopped last, up to
// the last complete line, and adds the switches it finds. The caller holds
// the cluster's mu.
func (n *RedisNode) readSwitches(name string) {
	f, err := os.Open(n.LogPath())
	if err != nil {
		return
	}
	defer f.Close()
	if _, err := f.Seek(n.logRead, io.SeekStart); err != nil {
		return
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return
	}
	end := strings.LastIndexByte(string(b), '\n')
	if end < 0 {
		return
	}
	n.switches = append(n.switches, parseSwitches(string(b[:end]), name)...)
	n.logRead += int64(end + 1)
}

// unplanned builds the error for switches nobody waited for.
func (c *RedisCluster) unplanned(sw []masterSwitch, expected string) error {
	e := &UnplannedFailoverError{Expected: expected, Events: c.masterEvents()}
	for _, s := range sw {
		e.Switches = append(e.Switches, fmt.Sprintf("%s -> %s at %s", c.nodeName(s.from), c.nodeName(s.to), s.at))
	}
	return e
}

// nodeName names the data node at addr, or returns addr.
func (c *RedisCluster) nodeName(addr string) string {
	for _, n := range c.Nodes {
		if n.Addr() == addr {
			return n.Name
		}
	}
	return addr
}

// masterEvents returns the last lines about the master from each
// Sentinel's log, prefixed with its name.
func (c *RedisCluster) masterEvents() string {
	// The events that tell a failover's story.
	events := []string{"+sdown master", "-sdown master", "+odown master", "-odown master", "+try-failover",
		"+elected-leader", "-failover-abort", "+promoted-slave", "+switch-master", "+convert-to-slave", "+tilt", "-tilt"}
	var b strings.Builder
	for _, s := range c.Sentinels {
		var lines []string
		for line := range strings.SplitSeq(s.d.logTail(300), "\n") {
			for _, ev := range events {
				if strings.Contains(line, ev) {
					lines = append(lines, line)
					break
				}
			}
		}
		if len(lines) > 20 {
			lines = lines[len(lines)-20:]
		}
		for _, l := range lines {
			fmt.Fprintf(&b, "  %s: %s\n", s.Name, l)
		}
	}
	return b.String()
}
