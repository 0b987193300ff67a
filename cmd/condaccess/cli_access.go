package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"google.golang.org/protobuf/proto"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
)

func init() {
	register("access", "evaluate access, what-if, sign-in log (access service)", group("access", map[string]verb{
		"evaluate": {"decide one access: access evaluate --user U --device D --app A", accessEvaluate},
		"whatif":   {"decide as things are and with hypothetical changes: access whatif --user U --device D --app A --risk high", accessWhatIf},
		"signins":  {"list recorded decisions, newest first", accessSignIns},
		"sessions": {"list sessions", accessSessions},
	}))
}

// requestFlags are the flags that describe one access request.
type requestFlags struct {
	user, device, app, platform, ip, clientApp string
	mfa                                        bool
}

func (r *requestFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&r.user, "user", "", "user id (required)")
	fs.StringVar(&r.device, "device", "", "device id (required)")
	fs.StringVar(&r.app, "app", "", "application id (required)")
	fs.StringVar(&r.platform, "platform", "", "client platform (default: the device's)")
	fs.StringVar(&r.ip, "ip", "", "client IP address")
	fs.StringVar(&r.clientApp, "client-app", "", "browser, mobile-apps-and-desktop-clients, exchange-active-sync, other")
	fs.BoolVar(&r.mfa, "mfa", false, "the user completed multi-factor authentication")
}

func (r *requestFlags) request() (*accessv1.EvaluateAccessRequest, error) {
	p, err := parseEnum(commonv1.Platform(0).Descriptor(), r.platform)
	if err != nil {
		return nil, err
	}
	ca, err := parseEnum(accessv1.ClientAppType(0).Descriptor(), r.clientApp)
	if err != nil {
		return nil, err
	}
	return &accessv1.EvaluateAccessRequest{
		UserId: r.user, DeviceId: r.device, ApplicationId: r.app,
		Client: &accessv1.ClientContext{Platform: commonv1.Platform(p), IpAddress: r.ip, MfaDone: r.mfa, ClientAppType: accessv1.ClientAppType(ca)},
	}, nil
}

func accessEvaluate(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	var rf requestFlags
	rf.register(fs)
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 0, "no argument"); err != nil {
			return err
		}
		req, err := rf.request()
		if err != nil {
			return err
		}
		client, err := c.access()
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		resp, err := client.EvaluateAccess(ctx, req)
		if err != nil {
			return err
		}
		if c.json() {
			return c.printJSON(resp)
		}
		c.printDecision(resp)
		return nil
	}
}

func accessWhatIf(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	var rf requestFlags
	var state, risk, drafts, mfaOverride string
	rf.register(fs)
	fs.StringVar(&state, "compliance-state", "", "hypothetical compliance state: compliant, noncompliant, ...")
	fs.StringVar(&risk, "risk", "", "hypothetical device risk: none, low, medium, high")
	fs.StringVar(&drafts, "draft", "", "YAML file of draft ConditionalAccessPolicy resources, evaluated as if saved")
	fs.StringVar(&mfaOverride, "what-if-mfa", "", "hypothetical MFA claim: true or false")
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 0, "no argument"); err != nil {
			return err
		}
		req, err := rf.request()
		if err != nil {
			return err
		}
		st, err := parseEnum(commonv1.ComplianceState(0).Descriptor(), state)
		if err != nil {
			return err
		}
		rl, err := parseEnum(commonv1.RiskLevel(0).Descriptor(), risk)
		if err != nil {
			return err
		}
		ov := &accessv1.WhatIfOverrides{ComplianceState: commonv1.ComplianceState(st), DeviceRisk: commonv1.RiskLevel(rl)}
		switch mfaOverride {
		case "":
		case "true", "false":
			ov.MfaDone = proto.Bool(mfaOverride == "true")
		default:
			return fmt.Errorf("%w: --what-if-mfa must be true or false", errUsage)
		}
		if drafts != "" {
			data, err := os.ReadFile(drafts)
			if err != nil {
				return err
			}
			docs, err := parseManifests(data)
			if err != nil {
				return fmt.Errorf("%s: %w", drafts, err)
			}
			for i, d := range docs {
				if d.Kind != kindCAPolicy {
					return fmt.Errorf("%s: resource %d: drafts must be %s, not %s", drafts, i+1, kindCAPolicy, d.Kind)
				}
				m, err := decodeManifest(d)
				if err != nil {
					return fmt.Errorf("%s: resource %d: %w", drafts, i+1, err)
				}
				ov.DraftPolicies = append(ov.DraftPolicies, m.(*accessv1.ConditionalAccessPolicy))
			}
		}
		client, err := c.access()
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		resp, err := client.WhatIf(ctx, &accessv1.WhatIfRequest{Request: req, Overrides: ov})
		if err != nil {
			return err
		}
		if c.json() {
			return c.printJSON(resp)
		}
		fmt.Fprintln(c.stdout, "== as things are")
		c.printDecision(resp.GetActual())
		fmt.Fprintln(c.stdout, "\n== what if")
		c.printDecision(resp.GetWhatIf())
		if len(resp.GetChanges()) > 0 {
			fmt.Fprintln(c.stdout, "\n== changes")
			for _, ch := range resp.GetChanges() {
				fmt.Fprintln(c.stdout, "- "+ch)
			}
		}
		return nil
	}
}

func accessSignIns(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	var page pageFlags
	var user, device, app, decision string
	page.register(fs)
	fs.StringVar(&user, "user", "", "keep one user's sign-ins")
	fs.StringVar(&device, "device", "", "keep one device's sign-ins")
	fs.StringVar(&app, "app", "", "keep one application's sign-ins")
	fs.StringVar(&decision, "decision", "", "allow or block")
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 0, "no argument"); err != nil {
			return err
		}
		d, err := parseEnum(accessv1.Decision(0).Descriptor(), decision)
		if err != nil {
			return err
		}
		client, err := c.access()
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		resp, err := client.ListSignIns(ctx, &accessv1.ListSignInsRequest{
			PageSize: int32(page.size), PageToken: page.token, UserId: user, DeviceId: device,
			ApplicationId: app, Decision: accessv1.Decision(d),
		})
		if err != nil {
			return err
		}
		if c.json() {
			return c.printJSON(resp)
		}
		rows := make([][]string, 0, len(resp.GetSignIns()))
		for _, s := range resp.GetSignIns() {
			rows = append(rows, []string{ts(s.GetTime()), s.GetUserId(), s.GetDeviceId(), s.GetApplicationId(),
				short(s.GetDecision()), reasonCodes(s.GetReasons()), short(s.GetComplianceState()), orDash(s.GetTraceId())})
		}
		c.table([]string{"TIME", "USER", "DEVICE", "APP", "DECISION", "REASON", "COMPLIANCE", "TRACE"}, rows)
		c.morePages(resp.GetNextPageToken())
		return nil
	}
}

func accessSessions(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	var page pageFlags
	var user, device, state string
	page.register(fs)
	fs.StringVar(&user, "user", "", "keep one user's sessions")
	fs.StringVar(&device, "device", "", "keep one device's sessions")
	fs.StringVar(&state, "state", "", "active or revoked")
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 0, "no argument"); err != nil {
			return err
		}
		st, err := parseEnum(accessv1.SessionState(0).Descriptor(), state)
		if err != nil {
			return err
		}
		client, err := c.access()
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		resp, err := client.ListSessions(ctx, &accessv1.ListSessionsRequest{
			PageSize: int32(page.size), PageToken: page.token, UserId: user, DeviceId: device, State: accessv1.SessionState(st),
		})
		if err != nil {
			return err
		}
		if c.json() {
			return c.printJSON(resp)
		}
		rows := make([][]string, 0, len(resp.GetSessions()))
		for _, s := range resp.GetSessions() {
			rows = append(rows, []string{s.GetSessionId(), s.GetUserId(), s.GetDeviceId(), s.GetApplicationId(),
				short(s.GetState()), ts(s.GetCreateTime()), ts(s.GetRevokeTime()), orDash(s.GetRevokeReason())})
		}
		c.table([]string{"SESSION", "USER", "DEVICE", "APP", "STATE", "OPENED", "REVOKED", "REASON"}, rows)
		c.morePages(resp.GetNextPageToken())
		return nil
	}
}

func reasonCodes(rs []*accessv1.Reason) string {
	codes := make([]string, 0, len(rs))
	for _, r := range rs {
		codes = append(codes, r.GetCode())
	}
	return orDash(strings.Join(codes, ","))
}

func (c *cli) printDecision(r *accessv1.EvaluateAccessResponse) {
	dc := r.GetDeviceCompliance()
	c.fields([][2]string{
		{"decision", short(r.GetDecision())},
		{"reason", reasonCodes(r.GetReasons())},
		{"compliance", fmt.Sprintf("%s (risk %s, revision %d, stale %s)", short(dc.GetState()), short(dc.GetDeviceRisk()), dc.GetRevision(), yesNo(dc.GetStale()))},
		{"session", orDash(r.GetSessionId())},
		{"trace", orDash(r.GetTraceId())},
	})
	for _, rs := range r.GetReasons() {
		fmt.Fprintf(c.stdout, "  %s: %s\n", rs.GetCode(), rs.GetMessage())
	}
	if len(r.GetPolicies()) > 0 {
		var rows [][]string
		for _, p := range r.GetPolicies() {
			var unsat []string
			for _, u := range p.GetUnsatisfiedControls() {
				unsat = append(unsat, strings.ToLower(short(u)))
			}
			rows = append(rows, []string{p.GetPolicyId(), short(p.GetState()), short(p.GetResult()), orDash(strings.Join(unsat, ",")), orDash(p.GetNotAppliedReason())})
		}
		fmt.Fprintln(c.stdout)
		c.table([]string{"POLICY", "STATE", "RESULT", "UNSATISFIED", "NOT APPLIED BECAUSE"}, rows)
	}
	if len(r.GetCauseChain()) > 0 {
		fmt.Fprintln(c.stdout, "\ncause chain:")
		for _, cs := range r.GetCauseChain() {
			fmt.Fprintf(c.stdout, "  %s %s: %s\n", strings.ToLower(short(cs.GetKind())), cs.GetId(), cs.GetDescription())
		}
	}
}
