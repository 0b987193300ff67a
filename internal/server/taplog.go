package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/tap"

	"github.com/condaccess/condaccess/internal/apierr"
)

// tapLogEvery is how often a refusal in the tap is logged per client host and reason.
const tapLogEvery = 10 * time.Second

// tapLogMaxKeys bounds the hosts remembered; past it the memory is cleared (at worst
// a line more per host and reason).
const tapLogMaxKeys = 10000

// tapLog logs the calls the taps refuse. They never reach the interceptor chain, so
// the logging interceptor writes no line for them; one line each would be a flood of
// its own (the overload benchmark's taps refuse tens of thousands of calls a second),
// so it writes the first refusal of a client host and reason, then at most one line
// per tapLogEvery with the number refused meanwhile.
type tapLog struct {
	logger *slog.Logger
	mu     sync.Mutex
	seen   map[tapLogKey]*tapLogEntry
}

type tapLogKey struct{ host, reason string }

type tapLogEntry struct {
	last       time.Time
	suppressed int
}

func newTapLog(logger *slog.Logger) *tapLog {
	return &tapLog{logger: logger, seen: map[tapLogKey]*tapLogEntry{}}
}

// wrap logs the refusals of h.
func (l *tapLog) wrap(h tap.ServerInHandle) tap.ServerInHandle {
	return func(ctx context.Context, info *tap.Info) (context.Context, error) {
		ctx, err := h(ctx, info)
		if err != nil {
			l.refused(ctx, info.FullMethodName, err)
		}
		return ctx, err
	}
}

func (l *tapLog) refused(ctx context.Context, method string, err error) {
	host := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		host = clientHost(p.Addr.String())
	}
	k := tapLogKey{host: host, reason: apierr.Reason(err)}
	now := time.Now()
	l.mu.Lock()
	e, ok := l.seen[k]
	if !ok {
		if len(l.seen) >= tapLogMaxKeys {
			clear(l.seen)
		}
		e = &tapLogEntry{}
		l.seen[k] = e
	}
	if ok && now.Sub(e.last) < tapLogEvery {
		e.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := e.suppressed
	e.last, e.suppressed = now, 0
	l.mu.Unlock()
	l.logger.WarnContext(ctx, "call refused before its request was read",
		"grpc.method", method, "peer.host", host, "reason", k.reason, "err", err.Error(),
		"refused_since_last_line", suppressed)
}
