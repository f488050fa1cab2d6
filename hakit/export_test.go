package hakit

import "time"

// SetMaintenance makes a's maintenance tasks (uploads cleanup, expired
// sessions) run about every every, and take uploads older than age as
// abandoned (age 0: the real ages). Call it before the wiring methods.
func SetMaintenance(a *App, every, age time.Duration) {
	a.wire.maintenanceEvery, a.wire.maintenanceAge = every, age
}
