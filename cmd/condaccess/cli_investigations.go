package main

import (
	"context"
	"flag"
	"fmt"
	"strings"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
)

func init() {
	register("investigations", "automated investigations and their actions; approvals (remediation service)", group("investigations", map[string]verb{
		"list":       {"list investigations, newest first", investigationsList},
		"get":        {"show an investigation with its evidence and actions: investigations get ID", investigationsGet},
		"start":      {"open an investigation by hand: investigations start DEVICE_ID [--alert A]...", investigationsStart},
		"cancel":     {"cancel an open investigation: investigations cancel ID", investigationsCancel},
		"actions":    {"list remediation actions (the action center)", investigationsActions},
		"approve":    {"approve a pending action: investigations approve ACTION_ID", actionDecision("approve")},
		"reject":     {"reject a pending action: investigations reject ACTION_ID", actionDecision("reject")},
		"undo":       {"undo a succeeded quarantine (restores the file): investigations undo ACTION_ID", actionDecision("undo")},
		"automation": {"show automation levels, or set one: investigations automation [--group G --level full|semi|none]", investigationsAutomation},
		"agents":     {"list endpoint agents and their health", investigationsAgents},
	}))
}

func investigationsList(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	var page pageFlags
	var device, state string
	page.register(fs)
	fs.StringVar(&device, "device", "", "keep one device's investigations")
	fs.StringVar(&state, "state", "", "running, pending-approval, remediated, partially-remediated, failed, cancelled, no-threats-found")
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 0, "no argument"); err != nil {
			return err
		}
		st, err := parseEnum(remediationv1.InvestigationState(0).Descriptor(), state)
		if err != nil {
			return err
		}
		client, err := c.remediation()
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		resp, err := client.ListInvestigations(ctx, &remediationv1.ListInvestigationsRequest{
			PageSize: int32(page.size), PageToken: page.token, DeviceId: device, State: remediationv1.InvestigationState(st),
		})
		if err != nil {
			return err
		}
		if c.json() {
			return c.printJSON(resp)
		}
		rows := make([][]string, 0, len(resp.GetInvestigations()))
		for _, inv := range resp.GetInvestigations() {
			rows = append(rows, []string{inv.GetInvestigationId(), inv.GetDeviceId(), short(inv.GetState()),
				short(inv.GetAutomationLevel()), orDash(strings.Join(inv.GetAlertIds(), ",")), fmt.Sprint(len(inv.GetActions())), ts(inv.GetCreateTime())})
		}
		c.table([]string{"INVESTIGATION", "DEVICE", "STATE", "AUTOMATION", "ALERTS", "ACTIONS", "STARTED"}, rows)
		c.morePages(resp.GetNextPageToken())
		return nil
	}
}

func investigationsGet(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 1, "INVESTIGATION_ID"); err != nil {
			return err
		}
		client, err := c.remediation()
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		resp, err := client.GetInvestigation(ctx, &remediationv1.GetInvestigationRequest{InvestigationId: args[0]})
		if err != nil {
			return err
		}
		return c.printInvestigation(resp.GetInvestigation())
	}
}

func investigationsStart(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	var alerts stringList
	var reason string
	fs.Var(&alerts, "alert", "alert to link (repeatable)")
	fs.StringVar(&reason, "reason", "", "why")
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 1, "DEVICE_ID"); err != nil {
			return err
		}
		client, err := c.remediation()
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		resp, err := client.StartInvestigation(ctx, &remediationv1.StartInvestigationRequest{DeviceId: args[0], AlertIds: alerts, Reason: reason})
		if err != nil {
			return err
		}
		return c.printInvestigation(resp.GetInvestigation())
	}
}

func investigationsCancel(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	var comment string
	fs.StringVar(&comment, "comment", "", "why")
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 1, "INVESTIGATION_ID"); err != nil {
			return err
		}
		client, err := c.remediation()
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		resp, err := client.CancelInvestigation(ctx, &remediationv1.CancelInvestigationRequest{InvestigationId: args[0], Comment: comment})
		if err != nil {
			return err
		}
		return c.printInvestigation(resp.GetInvestigation())
	}
}

func investigationsActions(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	var page pageFlags
	var device, state, inv string
	page.register(fs)
	fs.StringVar(&device, "device", "", "keep one device's actions")
	fs.StringVar(&inv, "investigation", "", "keep one investigation's actions")
	fs.StringVar(&state, "state", "", "pending-approval, queued, sent, succeeded, failed, timed-out, rejected, cancelled, undone")
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 0, "no argument"); err != nil {
			return err
		}
		st, err := parseEnum(remediationv1.ActionState(0).Descriptor(), state)
		if err != nil {
			return err
		}
		client, err := c.remediation()
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		resp, err := client.ListActions(ctx, &remediationv1.ListActionsRequest{
			PageSize: int32(page.size), PageToken: page.token, DeviceId: device, InvestigationId: inv, State: remediationv1.ActionState(st),
		})
		if err != nil {
			return err
		}
		if c.json() {
			return c.printJSON(resp)
		}
		c.actionTable(resp.GetActions())
		c.morePages(resp.GetNextPageToken())
		return nil
	}
}

// actionDecision is approve, reject or undo of one action.
func actionDecision(which string) func(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	return func(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
		var comment string
		fs.StringVar(&comment, "comment", "", "why (audited)")
		return func(ctx context.Context, c *cli, args []string) error {
			if err := needArgs(args, 1, "ACTION_ID"); err != nil {
				return err
			}
			client, err := c.remediation()
			if err != nil {
				return err
			}
			ctx, cancel := c.callCtx(ctx)
			defer cancel()
			var actions []*remediationv1.Action
			switch which {
			case "approve":
				resp, err := client.ApproveAction(ctx, &remediationv1.ApproveActionRequest{ActionId: args[0], Comment: comment})
				if err != nil {
					return err
				}
				if c.json() {
					return c.printJSON(resp)
				}
				actions = append(actions, resp.GetAction())
			case "reject":
				resp, err := client.RejectAction(ctx, &remediationv1.RejectActionRequest{ActionId: args[0], Comment: comment})
				if err != nil {
					return err
				}
				if c.json() {
					return c.printJSON(resp)
				}
				actions = append(actions, resp.GetAction())
			case "undo":
				resp, err := client.UndoAction(ctx, &remediationv1.UndoActionRequest{ActionId: args[0], Comment: comment})
				if err != nil {
					return err
				}
				if c.json() {
					return c.printJSON(resp)
				}
				actions = append(actions, resp.GetAction(), resp.GetRestoreAction())
			}
			c.actionTable(actions)
			return nil
		}
	}
}

func investigationsAutomation(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	var grp, level string
	fs.StringVar(&grp, "group", "", "device group to set (\"*\" sets the default)")
	fs.StringVar(&level, "level", "", "full, semi or none")
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 0, "no argument"); err != nil {
			return err
		}
		client, err := c.remediation()
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		if grp != "" || level != "" {
			l, err := parseEnum(remediationv1.AutomationLevel(0).Descriptor(), level)
			if err != nil {
				return err
			}
			resp, err := client.SetAutomationLevel(ctx, &remediationv1.SetAutomationLevelRequest{Setting: &remediationv1.AutomationLevelSetting{
				DeviceGroup: grp, Level: remediationv1.AutomationLevel(l),
			}})
			if err != nil {
				return err
			}
			if c.json() {
				return c.printJSON(resp)
			}
			fmt.Fprintf(c.stdout, "automation level of %s: %s\n", resp.GetSetting().GetDeviceGroup(), short(resp.GetSetting().GetLevel()))
			return nil
		}
		resp, err := client.ListAutomationLevels(ctx, &remediationv1.ListAutomationLevelsRequest{})
		if err != nil {
			return err
		}
		if c.json() {
			return c.printJSON(resp)
		}
		rows := [][]string{{"(default)", short(resp.GetDefaultLevel()), "-", "-"}}
		for _, s := range resp.GetSettings() {
			rows = append(rows, []string{s.GetDeviceGroup(), short(s.GetLevel()), orDash(s.GetUpdatedBy()), ts(s.GetUpdateTime())})
		}
		c.table([]string{"GROUP", "LEVEL", "BY", "SET"}, rows)
		return nil
	}
}

func investigationsAgents(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	var page pageFlags
	page.register(fs)
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 0, "no argument"); err != nil {
			return err
		}
		client, err := c.remediation()
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		resp, err := client.ListAgents(ctx, &remediationv1.ListAgentsRequest{PageSize: int32(page.size), PageToken: page.token})
		if err != nil {
			return err
		}
		if c.json() {
			return c.printJSON(resp)
		}
		rows := make([][]string, 0, len(resp.GetAgents()))
		for _, a := range resp.GetAgents() {
			rows = append(rows, []string{a.GetDeviceId(), short(a.GetHealth()), orDash(a.GetHostname()), orDash(a.GetAgentVersion()), ts(a.GetLastHeartbeatTime())})
		}
		c.table([]string{"DEVICE", "HEALTH", "HOST", "VERSION", "LAST HEARTBEAT"}, rows)
		c.morePages(resp.GetNextPageToken())
		return nil
	}
}

func (c *cli) printInvestigation(inv *remediationv1.Investigation) error {
	if c.json() {
		return c.printJSON(inv)
	}
	c.fields([][2]string{
		{"investigation", inv.GetInvestigationId()},
		{"device", inv.GetDeviceId()},
		{"state", short(inv.GetState())},
		{"automation", short(inv.GetAutomationLevel())},
		{"alerts", orDash(strings.Join(inv.GetAlertIds(), ", "))},
		{"started by", orDash(inv.GetStartedBy())},
		{"reason", orDash(inv.GetReason())},
		{"started", ts(inv.GetCreateTime())},
		{"ended", ts(inv.GetEndTime())},
		{"trace", orDash(traceIDOf(inv.GetTraceContext()))},
	})
	if len(inv.GetEvidence()) > 0 {
		fmt.Fprintln(c.stdout)
		var rows [][]string
		for _, e := range inv.GetEvidence() {
			rows = append(rows, []string{evidenceString(e.GetEvidence()), short(e.GetVerdict()), orDash(e.GetAlertId()), orDash(e.GetReason())})
		}
		c.table([]string{"EVIDENCE", "VERDICT", "ALERT", "REASON"}, rows)
	}
	if len(inv.GetActions()) > 0 {
		fmt.Fprintln(c.stdout)
		c.actionTable(inv.GetActions())
	}
	return nil
}

func (c *cli) actionTable(actions []*remediationv1.Action) {
	rows := make([][]string, 0, len(actions))
	for _, a := range actions {
		rows = append(rows, []string{a.GetActionId(), orDash(a.GetInvestigationId()), a.GetDeviceId(), short(a.GetType()), short(a.GetState()),
			evidenceString(a.GetTarget()), actionResult(a)})
	}
	c.table([]string{"ACTION", "INVESTIGATION", "DEVICE", "TYPE", "STATE", "TARGET", "RESULT"}, rows)
}

// actionResult is the agent's result, or why a pending action needs approval.
func actionResult(a *remediationv1.Action) string {
	if a.GetResult() == "" && a.GetApprovalReason() != "" && a.GetState() == remediationv1.ActionState_ACTION_STATE_PENDING_APPROVAL {
		return "needs approval: " + a.GetApprovalReason()
	}
	return orDash(a.GetResult())
}

func evidenceString(e *commonv1.Evidence) string {
	switch k := e.GetKind().(type) {
	case *commonv1.Evidence_File:
		return "file " + k.File.GetPath()
	case *commonv1.Evidence_Process:
		return fmt.Sprintf("process %d %s", k.Process.GetPid(), k.Process.GetName())
	}
	return "-"
}

// traceIDOf extracts the trace id from a W3C traceparent ("00-<trace id>-<span id>-01").
func traceIDOf(tc *commonv1.TraceContext) string {
	parts := strings.Split(tc.GetTraceparent(), "-")
	if len(parts) != 4 {
		return ""
	}
	return parts[1]
}
