package server

import "time"

// SetStrangerCallTimeout sets strangerCallTimeout for a test; the returned func
// restores it.
func SetStrangerCallTimeout(d time.Duration) (restore func()) {
	old := strangerCallTimeout
	strangerCallTimeout = d
	return func() { strangerCallTimeout = old }
}
