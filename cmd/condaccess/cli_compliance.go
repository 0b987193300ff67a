package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
)

func init() {
	register("compliance", "device compliance with its reasons; exclusions (compliance service)", group("compliance", map[string]verb{
		"get":        {"show a device's compliance, per policy and setting: compliance get DEVICE_ID", complianceGet},
		"list":       {"list device compliance states", complianceList},
		"exclude":    {"exclude a device (audited): compliance exclude DEVICE_ID --reason R [--expires 24h]", complianceExclude},
		"unexclude":  {"end a device's exclusion: compliance unexclude DEVICE_ID", complianceUnexclude},
		"exclusions": {"list exclusions, current and ended", complianceExclusions},
	}))
}

func complianceGet(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 1, "DEVICE_ID"); err != nil {
			return err
		}
		client, err := c.compliance()
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		resp, err := client.GetDeviceCompliance(ctx, &compliancev1.GetDeviceComplianceRequest{DeviceId: args[0]})
		if err != nil {
			return err
		}
		return c.printCompliance(resp.GetDeviceCompliance())
	}
}

func complianceList(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	var page pageFlags
	var state string
	page.register(fs)
	fs.StringVar(&state, "state", "", "keep one state: compliant, noncompliant, in-grace-period, excluded, not-evaluated")
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 0, "no argument"); err != nil {
			return err
		}
		s, err := parseEnum(commonv1.ComplianceState(0).Descriptor(), state)
		if err != nil {
			return err
		}
		client, err := c.compliance()
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		resp, err := client.ListDeviceCompliance(ctx, &compliancev1.ListDeviceComplianceRequest{
			PageSize: int32(page.size), PageToken: page.token, State: commonv1.ComplianceState(s),
		})
		if err != nil {
			return err
		}
		if c.json() {
			return c.printJSON(resp)
		}
		rows := make([][]string, 0, len(resp.GetDeviceCompliances()))
		for _, d := range resp.GetDeviceCompliances() {
			rows = append(rows, []string{d.GetDeviceId(), short(d.GetState()), short(d.GetDeviceRisk()), ts(d.GetEvaluateTime()), d.GetReason()})
		}
		c.table([]string{"DEVICE", "STATE", "RISK", "EVALUATED", "REASON"}, rows)
		c.morePages(resp.GetNextPageToken())
		return nil
	}
}

func complianceExclude(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	var reason string
	var expires time.Duration
	fs.StringVar(&reason, "reason", "", "why (required; audited)")
	fs.DurationVar(&expires, "expires", 0, "end the exclusion by itself after this long (0: never)")
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 1, "DEVICE_ID"); err != nil {
			return err
		}
		req := &compliancev1.ExcludeDeviceRequest{DeviceId: args[0], Reason: reason}
		if expires > 0 {
			req.ExpireTime = timestamppb.New(time.Now().Add(expires))
		}
		client, err := c.compliance()
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		resp, err := client.ExcludeDevice(ctx, req)
		if err != nil {
			return err
		}
		if c.json() {
			return c.printJSON(resp)
		}
		return c.printCompliance(resp.GetDeviceCompliance())
	}
}

func complianceUnexclude(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	var comment string
	fs.StringVar(&comment, "comment", "", "why (audited)")
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 1, "DEVICE_ID"); err != nil {
			return err
		}
		client, err := c.compliance()
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		resp, err := client.RemoveExclusion(ctx, &compliancev1.RemoveExclusionRequest{DeviceId: args[0], Comment: comment})
		if err != nil {
			return err
		}
		if c.json() {
			return c.printJSON(resp)
		}
		return c.printCompliance(resp.GetDeviceCompliance())
	}
}

func complianceExclusions(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	var page pageFlags
	var device string
	var active bool
	page.register(fs)
	fs.StringVar(&device, "device", "", "keep one device's exclusions")
	fs.BoolVar(&active, "active", false, "keep the exclusions still in force")
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 0, "no argument"); err != nil {
			return err
		}
		client, err := c.compliance()
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		resp, err := client.ListExclusions(ctx, &compliancev1.ListExclusionsRequest{
			PageSize: int32(page.size), PageToken: page.token, DeviceId: device, ActiveOnly: active,
		})
		if err != nil {
			return err
		}
		if c.json() {
			return c.printJSON(resp)
		}
		rows := make([][]string, 0, len(resp.GetExclusions()))
		for _, e := range resp.GetExclusions() {
			rows = append(rows, []string{e.GetExclusionId(), e.GetDeviceId(), e.GetCreatedBy(), ts(e.GetCreateTime()),
				ts(e.GetExpireTime()), ts(e.GetEndTime()), e.GetReason()})
		}
		c.table([]string{"EXCLUSION", "DEVICE", "BY", "CREATED", "EXPIRES", "ENDED", "REASON"}, rows)
		c.morePages(resp.GetNextPageToken())
		return nil
	}
}

func (c *cli) printCompliance(d *compliancev1.DeviceCompliance) error {
	if c.json() {
		return c.printJSON(d)
	}
	kv := [][2]string{
		{"device", d.GetDeviceId()},
		{"state", short(d.GetState())},
		{"reason", orDash(d.GetReason())},
		{"device risk", short(d.GetDeviceRisk())},
		{"risk alerts", orDash(strings.Join(d.GetRiskAlertIds(), ", "))},
		{"evaluated", ts(d.GetEvaluateTime())},
		{"revision", fmt.Sprint(d.GetRevision())},
	}
	if e := d.GetExclusion(); e != nil {
		kv = append(kv, [2]string{"excluded", fmt.Sprintf("by %s: %s (expires %s)", e.GetCreatedBy(), e.GetReason(), ts(e.GetExpireTime()))})
	}
	c.fields(kv)
	if len(d.GetPolicies()) > 0 {
		fmt.Fprintln(c.stdout)
		var rows [][]string
		for _, p := range d.GetPolicies() {
			for _, s := range p.GetSettings() {
				rows = append(rows, []string{p.GetPolicyId(), short(p.GetState()), s.GetSetting(), s.GetExpected(), s.GetActual(), yesNo(s.GetCompliant()), s.GetReason()})
			}
			if len(p.GetSettings()) == 0 {
				rows = append(rows, []string{p.GetPolicyId(), short(p.GetState()), "-", "-", "-", "-", "-"})
			}
		}
		c.table([]string{"POLICY", "STATE", "SETTING", "EXPECTED", "ACTUAL", "OK", "REASON"}, rows)
	}
	return nil
}
