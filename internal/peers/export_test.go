package peers

import (
	"testing"
	"time"
)

// SetKeepalive sets the keepalive of connections dialled during the test (gRPC
// raises a ping interval under 10 s to 10 s).
func SetKeepalive(t testing.TB, every, timeout time.Duration) {
	oldTime, oldTimeout := keepaliveTime, keepaliveTimeout
	keepaliveTime, keepaliveTimeout = every, timeout
	t.Cleanup(func() { keepaliveTime, keepaliveTimeout = oldTime, oldTimeout })
}
