package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/condaccess/condaccess/gen/go/condaccess/audit/v1"
)

func init() {
	register("audit", "list the audit log of admin changes (every serve process)", group("audit", map[string]verb{
		"list": {"list audit events, newest first: audit list [--actor A] [--resource-type T] [--since 24h]", auditList},
	}))
}

// parseTimeFlag reads an RFC 3339 time or a duration before now ("24h").
func parseTimeFlag(name, v string, now time.Time) (*timestamppb.Timestamp, error) {
	if v == "" {
		return nil, nil
	}
	if d, err := time.ParseDuration(v); err == nil {
		if d < 0 {
			return nil, fmt.Errorf("%w: --%s: a duration before now must not be negative", errUsage, name)
		}
		return timestamppb.New(now.Add(-d)), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return nil, fmt.Errorf("%w: --%s: want an RFC 3339 time or a duration before now (e.g. 24h), not %q", errUsage, name, v)
	}
	return timestamppb.New(t), nil
}

func auditList(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	var page pageFlags
	var actor, resType, resID, method, since, until string
	page.register(fs)
	fs.StringVar(&actor, "actor", "", "keep one actor's events (certificate subject, or system)")
	fs.StringVar(&resType, "resource-type", "", "keep one resource type, e.g. conditional_access_policy, compliance_policy, alert")
	fs.StringVar(&resID, "resource-id", "", "keep one resource id")
	fs.StringVar(&method, "method", "", "keep one full gRPC method, e.g. /condaccess.access.v1.ConditionalAccessPolicyService/DeletePolicy")
	fs.StringVar(&since, "since", "", "keep events at or after: RFC 3339 time or duration before now (24h)")
	fs.StringVar(&until, "until", "", "keep events before: RFC 3339 time or duration before now")
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 0, "no argument"); err != nil {
			return err
		}
		now := time.Now()
		start, err := parseTimeFlag("since", since, now)
		if err != nil {
			return err
		}
		end, err := parseTimeFlag("until", until, now)
		if err != nil {
			return err
		}
		cc, err := c.conn("")
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		resp, err := auditv1.NewAuditServiceClient(cc).ListAuditEvents(ctx, &auditv1.ListAuditEventsRequest{
			PageSize: int32(page.size), PageToken: page.token, Actor: actor, ResourceType: resType, ResourceId: resID,
			Method: method, StartTime: start, EndTime: end,
		})
		if err != nil {
			return err
		}
		if c.json() {
			return c.printJSON(resp)
		}
		rows := make([][]string, 0, len(resp.GetEvents()))
		for _, e := range resp.GetEvents() {
			m := e.GetMethod()
			if i := strings.LastIndex(m, "/"); i >= 0 && strings.HasPrefix(m, "/") {
				m = m[i+1:] // a gRPC method: its name; an HTTP one ("POST /ssf/stream") stays whole
			}
			rows = append(rows, []string{ts(e.GetTime()), e.GetService(), e.GetActor().GetSubject(), short(e.GetAction()),
				e.GetResourceType() + "/" + e.GetResourceId(), orDash(m)})
		}
		c.table([]string{"TIME", "SERVICE", "ACTOR", "ACTION", "RESOURCE", "METHOD"}, rows)
		c.morePages(resp.GetNextPageToken())
		return nil
	}
}
