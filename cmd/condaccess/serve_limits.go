package main

import (
	"flag"
	"fmt"
	"time"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/server"
)

// limitOptions are serve's flags for the limits per connection and per identity.
type limitOptions struct {
	maxRecvMsgSize        int
	maxConcurrentStreams  uint
	keepaliveMinTime      time.Duration
	maxWatchesPerIdentity int
	alertRate             float64
	alertBurst            int
	maxCallsPerIdentity   int
	maxCallsInFlight      int
	maxBytesPerIdentity   int64
}

// Defaults of the per-identity alert rate limit (ReportAlert and ReportAlerts share it;
// a batch costs one token per alert, so the burst is at least the largest batch).
const (
	defaultAlertRate  = 100
	defaultAlertBurst = 1000
)

func (l *limitOptions) register(fs *flag.FlagSet) {
	fs.IntVar(&l.maxRecvMsgSize, "max-recv-msg-size", server.DefaultMaxRecvMsgSize, "largest request message in bytes; a larger one is refused with RESOURCE_EXHAUSTED before decoding")
	fs.UintVar(&l.maxConcurrentStreams, "max-concurrent-streams", server.DefaultMaxConcurrentStreams, "RPCs in flight per client connection")
	fs.DurationVar(&l.keepaliveMinTime, "keepalive-min-time", server.DefaultKeepaliveMinTime, "shortest keepalive ping interval a client may use; faster pingers are disconnected")
	fs.IntVar(&l.maxWatchesPerIdentity, "max-watches-per-identity", server.DefaultMaxWatchesPerIdentity, "open Watch… streams per caller identity; more are refused with RESOURCE_EXHAUSTED (TOO_MANY_WATCHES)")
	fs.Float64Var(&l.alertRate, "alert-rate", defaultAlertRate, "alerts per second per sensor identity (ReportAlert and ReportAlerts share the bucket); 0 disables the limit")
	fs.IntVar(&l.alertBurst, "alert-burst", defaultAlertBurst, "alert bucket size per sensor identity; at least the largest batch (1000)")
	fs.IntVar(&l.maxCallsPerIdentity, "max-calls-per-identity", server.DefaultMaxCallsPerIdentity, "unary calls in flight per caller identity (per connection in development mode); more are refused with RESOURCE_EXHAUSTED (TOO_MANY_CALLS_IN_FLIGHT) before their request is read")
	fs.IntVar(&l.maxCallsInFlight, "max-calls-in-flight", 0, "unary calls in flight in the whole server, the services' own counted but never refused (0: 128 per CPU); more are refused with RESOURCE_EXHAUSTED (SERVER_OVERLOADED) before their request is read; one identity holds at most half, and a reserve of a quarter more admits callers holding fewer than 8")
	fs.Int64Var(&l.maxBytesPerIdentity, "max-request-bytes-per-identity", server.DefaultMaxRequestBytesPerIdentity, "bytes of unary requests in flight per caller identity; at least --max-recv-msg-size; more are refused with RESOURCE_EXHAUSTED (TOO_MANY_REQUEST_BYTES_IN_FLIGHT)")
}

// apply sets the limits on cfg.
func (l limitOptions) apply(cfg *server.Config) error {
	if l.maxRecvMsgSize <= 0 || l.maxConcurrentStreams == 0 || l.maxWatchesPerIdentity <= 0 || l.alertRate < 0 {
		return fmt.Errorf("%w: --max-recv-msg-size, --max-concurrent-streams and --max-watches-per-identity must be positive, --alert-rate not negative", errUsage)
	}
	if l.maxCallsPerIdentity <= 0 || l.maxBytesPerIdentity < int64(l.maxRecvMsgSize) {
		return fmt.Errorf("%w: --max-calls-per-identity must be positive and --max-request-bytes-per-identity at least --max-recv-msg-size (%d)", errUsage, l.maxRecvMsgSize)
	}
	if l.maxCallsInFlight < 0 || l.maxCallsInFlight == 1 {
		return fmt.Errorf("%w: --max-calls-in-flight must be 0 (128 per CPU) or at least 2 (one identity holds at most half)", errUsage)
	}
	if l.maxRecvMsgSize > server.DefaultClientMaxRecvMsgSize {
		return fmt.Errorf("%w: --max-recv-msg-size %d is over what the suite's clients receive (%d)", errUsage, l.maxRecvMsgSize, server.DefaultClientMaxRecvMsgSize)
	}
	cfg.MaxRecvMsgSize = l.maxRecvMsgSize
	cfg.MaxConcurrentStreams = uint32(min(l.maxConcurrentStreams, 1<<31))
	cfg.KeepaliveMinTime = l.keepaliveMinTime
	cfg.MaxWatchesPerIdentity = l.maxWatchesPerIdentity
	cfg.MaxCallsPerIdentity = l.maxCallsPerIdentity
	cfg.MaxCallsInFlight = l.maxCallsInFlight
	cfg.MaxRequestBytesPerIdentity = l.maxBytesPerIdentity
	if l.alertRate > 0 {
		if l.alertBurst < 1000 {
			return fmt.Errorf("%w: --alert-burst %d is under the largest ReportAlerts batch (1000)", errUsage, l.alertBurst)
		}
		cfg.RateLimits = append(cfg.RateLimits, server.RateLimit{
			Methods: []string{riskv1.RiskService_ReportAlert_FullMethodName, riskv1.RiskService_ReportAlerts_FullMethodName},
			Rate:    l.alertRate,
			Burst:   l.alertBurst,
			Cost: func(req any) int {
				if r, ok := req.(*riskv1.ReportAlertsRequest); ok {
					return len(r.GetAlerts())
				}
				return 1
			},
		})
	}
	// The end user's page is open to callers without a certificate: a bucket per
	// client address bounds how fast one can try references (each try is an AES-GCM
	// open of a 128-bit-tagged token, so guessing is hopeless anyway) and open streams.
	cfg.RateLimits = append(cfg.RateLimits, server.RateLimit{
		Methods: []string{accessv1.AccessService_GetBlockedStatus_FullMethodName, accessv1.AccessService_WatchBlockedStatus_FullMethodName},
		Rate:    BlockedPageRate,
		Burst:   BlockedPageBurst,
	})
	return nil
}

// BlockedPageRate and BlockedPageBurst limit GetBlockedStatus and WatchBlockedStatus
// calls per client address (per identity for authenticated callers).
const (
	BlockedPageRate  = 2.0
	BlockedPageBurst = 20
)

// defaultLimits are the flag defaults, for a suite not started from flags.
func defaultLimits() limitOptions {
	var l limitOptions
	l.register(flag.NewFlagSet("limits", flag.ContinueOnError))
	return l
}
