package jobs

import "fmt"

// SetAfterEnqueue lets tests make a relay fail in the middle of a batch, as
// a crash would.
func SetAfterEnqueue(r *Relay, f func(n int) error) { r.afterEnqueue = f }

// SetAfterConfirm lets tests pause a relay's pass after its confirmation
// succeeded and before it deletes rows.
func SetAfterConfirm(r *Relay, f func()) { r.afterConfirm = f }

// ParseMasterID parses INFO server replication, for tests.
func ParseMasterID(info string) (string, error) {
	m, err := parseMasterID(info)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s replicas=%d offset=%d acked=%v", m, m.replicas, m.offset, m.acked), nil
}
