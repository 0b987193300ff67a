package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/apierr"
)

func init() {
	register("watch", "tail an event stream: watch risk|compliance|sessions|investigations [--from N]", group("watch", map[string]verb{
		"risk":           {"risk events: alerts and device risk changes", watchVerb("risk")},
		"compliance":     {"compliance events: device compliance changes and devices", watchVerb("compliance")},
		"sessions":       {"session events: sessions opened and revoked", watchVerb("sessions")},
		"investigations": {"investigation events: investigations and actions", watchVerb("investigations")},
	}))
}

// watchLine is one event of any stream, flattened for a table row.
type watchLine struct {
	revision int64
	time     string
	kind     string
	key      string
	summary  string
	trace    string
}

// watchStream receives one stream's messages as an event or a progress revision.
type watchStream interface {
	next() (event proto.Message, line watchLine, progress int64, err error)
}

func watchVerb(stream string) func(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	return func(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
		var from int64
		var progress bool
		var limit int
		fs.Int64Var(&from, "from", 0, "replay the events after this revision (0: all retained history), then tail")
		fs.BoolVar(&progress, "progress", false, "also print progress (bookmark) messages")
		fs.IntVar(&limit, "n", 0, "stop after this many events (0: never)")
		return func(ctx context.Context, c *cli, args []string) error {
			if err := needArgs(args, 0, "no argument"); err != nil {
				return err
			}
			ws, err := c.openWatch(ctx, stream, from)
			if err != nil {
				return err
			}
			// A stream cannot be aligned after the fact: fixed widths.
			const row = "%-8s  %-19s  %-21s  %-32s  %-32s  %s\n"
			if !c.json() {
				fmt.Fprintf(c.stdout, row, "REVISION", "TIME", "EVENT", "TRACE", "KEY", "SUMMARY")
			}
			count := 0
			// cur is the last revision printed or progressed past: where the stream
			// resumes when its replica dies.
			cur := from
			var broken time.Time
			backoff := watchMinBackoff
			for {
				ev, line, prog, err := ws.next()
				if errors.Is(err, io.EOF) || (ctx.Err() != nil && status.Code(err) == codes.Canceled) {
					return nil
				}
				if err != nil {
					if status.Code(err) == codes.OutOfRange && apierr.Reason(err) == "REVISION_COMPACTED" {
						return fmt.Errorf("revision %d is older than the retained history: list, then watch from the revision the list returns (%w)", cur, err)
					}
					// The replica died or is draining: open the stream again (the
					// client picks a live replica) after cur, for up to --timeout.
					if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
						return err
					}
					if broken.IsZero() {
						broken = time.Now()
					}
					if c.timeout > 0 && time.Since(broken) > c.timeout {
						return fmt.Errorf("stream broken for %v: %w", c.timeout, err)
					}
					fmt.Fprintf(c.stderr, "stream broken (%s); resuming after revision %d\n", status.Convert(err).Message(), cur)
					select {
					case <-ctx.Done():
						return nil
					case <-time.After(backoff):
					}
					backoff = min(2*backoff, watchMaxBackoff)
					next, err := c.openWatch(ctx, stream, cur)
					if err != nil {
						return err
					}
					ws = next
					continue
				}
				broken, backoff = time.Time{}, watchMinBackoff
				if ev == nil {
					cur = max(cur, prog)
					if progress {
						if c.json() {
							fmt.Fprintf(c.stdout, "{\"progress\":{\"revision\":\"%d\"}}\n", prog)
						} else {
							fmt.Fprintf(c.stdout, row, fmt.Sprint(prog), "-", "progress", "-", "-", "up to date")
						}
					}
					continue
				}
				cur = line.revision
				if c.json() {
					if err := c.printJSONLine(ev); err != nil {
						return err
					}
				} else {
					fmt.Fprintf(c.stdout, row, fmt.Sprint(line.revision), line.time, line.kind, orDash(line.trace), line.key, line.summary)
				}
				count++
				if limit > 0 && count >= limit {
					return nil
				}
			}
		}
	}
}

// watchMinBackoff and watchMaxBackoff bound the wait before a broken watch is opened
// again.
const (
	watchMinBackoff = 100 * time.Millisecond
	watchMaxBackoff = 2 * time.Second
)

type streamFunc func() (event proto.Message, line watchLine, progress int64, err error)

func (f streamFunc) next() (proto.Message, watchLine, int64, error) { return f() }

// watchResponse is what every Watch…Events response is: an event or a progress message.
type watchResponse[E proto.Message] interface {
	GetProgress() *commonv1.WatchProgress
	GetEvent() E
}

// recvStream adapts a generated Watch…Events stream's Recv to a watchStream.
func recvStream[M watchResponse[E], E proto.Message](recv func() (M, error), line func(E) watchLine) streamFunc {
	return func() (proto.Message, watchLine, int64, error) {
		m, err := recv()
		if err != nil {
			return nil, watchLine{}, 0, err
		}
		if p := m.GetProgress(); p != nil {
			return nil, watchLine{}, p.GetRevision(), nil
		}
		return m.GetEvent(), line(m.GetEvent()), 0, nil
	}
}

func (c *cli) openWatch(ctx context.Context, stream string, from int64) (watchStream, error) {
	switch stream {
	case "risk":
		client, err := c.risk()
		if err != nil {
			return nil, err
		}
		s, err := client.WatchRiskEvents(ctx, &riskv1.WatchRiskEventsRequest{StartRevision: from})
		if err != nil {
			return nil, err
		}
		return recvStream(s.Recv, riskLine), nil
	case "compliance":
		client, err := c.compliance()
		if err != nil {
			return nil, err
		}
		s, err := client.WatchComplianceEvents(ctx, &compliancev1.WatchComplianceEventsRequest{StartRevision: from})
		if err != nil {
			return nil, err
		}
		return recvStream(s.Recv, complianceLine), nil
	case "sessions":
		client, err := c.access()
		if err != nil {
			return nil, err
		}
		s, err := client.WatchSessionEvents(ctx, &accessv1.WatchSessionEventsRequest{StartRevision: from})
		if err != nil {
			return nil, err
		}
		return recvStream(s.Recv, sessionLine), nil
	case "investigations":
		client, err := c.remediation()
		if err != nil {
			return nil, err
		}
		s, err := client.WatchInvestigationEvents(ctx, &remediationv1.WatchInvestigationEventsRequest{StartRevision: from})
		if err != nil {
			return nil, err
		}
		return recvStream(s.Recv, investigationLine), nil
	}
	return nil, fmt.Errorf("%w: unknown stream %q", errUsage, stream)
}

func riskLine(e *riskv1.RiskEvent) watchLine {
	l := watchLine{revision: e.GetRevision(), time: ts(e.GetEventTime()), trace: traceIDOf(e.GetTraceContext())}
	switch p := e.GetPayload().(type) {
	case *riskv1.RiskEvent_DeviceRiskChanged:
		d := p.DeviceRiskChanged
		l.kind, l.key = "device-risk-changed", d.GetDeviceRisk().GetDeviceId()
		l.summary = fmt.Sprintf("%s -> %s (alert %s)", short(d.GetPreviousLevel()), short(d.GetDeviceRisk().GetLevel()), orDash(d.GetCauseAlertId()))
	case *riskv1.RiskEvent_AlertChanged:
		a := p.AlertChanged.GetAlert()
		l.kind, l.key = "alert-"+strings.ToLower(short(p.AlertChanged.GetType())), a.GetAlertId()
		l.summary = fmt.Sprintf("device %s, %s, %s: %s", a.GetDeviceId(), short(a.GetSeverity()), short(a.GetStatus()), a.GetTitle())
	}
	return l
}

func complianceLine(e *compliancev1.ComplianceEvent) watchLine {
	l := watchLine{revision: e.GetRevision(), time: ts(e.GetEventTime()), trace: traceIDOf(e.GetTraceContext())}
	switch p := e.GetPayload().(type) {
	case *compliancev1.ComplianceEvent_DeviceComplianceChanged:
		d := p.DeviceComplianceChanged
		l.kind, l.key = "compliance-changed", d.GetDeviceCompliance().GetDeviceId()
		l.summary = fmt.Sprintf("%s -> %s: %s", short(d.GetPreviousState()), short(d.GetDeviceCompliance().GetState()), d.GetDeviceCompliance().GetReason())
	case *compliancev1.ComplianceEvent_DeviceChanged:
		d := p.DeviceChanged.GetDevice()
		l.kind, l.key = "device-changed", d.GetDeviceId()
		l.summary = fmt.Sprintf("%s %s, groups %s, retired %s", short(d.GetPlatform()), orDash(d.GetOsVersion()), orDash(strings.Join(d.GetGroups(), ",")), yesNo(d.GetRetired()))
	}
	return l
}

func sessionLine(e *accessv1.SessionEvent) watchLine {
	l := watchLine{revision: e.GetRevision(), time: ts(e.GetEventTime()), trace: traceIDOf(e.GetTraceContext())}
	switch p := e.GetPayload().(type) {
	case *accessv1.SessionEvent_SessionOpened:
		s := p.SessionOpened.GetSession()
		l.kind, l.key = "session-opened", s.GetSessionId()
		l.summary = fmt.Sprintf("user %s, device %s, app %s", s.GetUserId(), s.GetDeviceId(), s.GetApplicationId())
	case *accessv1.SessionEvent_SessionRevoked:
		s := p.SessionRevoked.GetSession()
		l.kind, l.key = "session-revoked", s.GetSessionId()
		l.summary = fmt.Sprintf("user %s, device %s, app %s: %s", s.GetUserId(), s.GetDeviceId(), s.GetApplicationId(), p.SessionRevoked.GetReasonCode())
	}
	return l
}

func investigationLine(e *remediationv1.InvestigationEvent) watchLine {
	l := watchLine{revision: e.GetRevision(), time: ts(e.GetEventTime()), trace: traceIDOf(e.GetTraceContext())}
	switch p := e.GetPayload().(type) {
	case *remediationv1.InvestigationEvent_InvestigationChanged:
		inv := p.InvestigationChanged.GetInvestigation()
		l.kind, l.key = "investigation-changed", inv.GetInvestigationId()
		l.summary = fmt.Sprintf("device %s, %s, alerts %s", inv.GetDeviceId(), short(inv.GetState()), orDash(strings.Join(inv.GetAlertIds(), ",")))
	case *remediationv1.InvestigationEvent_ActionChanged:
		a := p.ActionChanged.GetAction()
		l.kind, l.key = "action-changed", a.GetActionId()
		l.summary = fmt.Sprintf("device %s, %s %s: %s", a.GetDeviceId(), short(a.GetType()), short(a.GetState()), evidenceString(a.GetTarget()))
	}
	return l
}
