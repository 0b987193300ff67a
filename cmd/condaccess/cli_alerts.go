package main

import (
	"context"
	"flag"
	"fmt"
	"strings"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
)

func init() {
	register("alerts", "report, show, list and resolve alerts; device risk (risk service)", group("alerts", map[string]verb{
		"report":  {"report an alert: alerts report ALERT_ID --device D --severity high --title T", alertsReport},
		"get":     {"show an alert: alerts get ALERT_ID", alertsGet},
		"list":    {"list alerts, newest first", alertsList},
		"resolve": {"resolve an alert: alerts resolve ALERT_ID --classification true-positive", alertsResolve},
		"risk":    {"show a device's risk level and the alerts behind it: alerts risk DEVICE_ID", alertsRisk},
	}))
}

func alertsReport(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	var device, severity, title, category, description, filePath, fileSHA string
	fs.StringVar(&device, "device", "", "device id (required)")
	fs.StringVar(&severity, "severity", "", "informational, low, medium, high (required)")
	fs.StringVar(&title, "title", "", "one-line summary (required)")
	fs.StringVar(&category, "category", "", "threat category, e.g. Malware")
	fs.StringVar(&description, "description", "", "description")
	fs.StringVar(&filePath, "file", "", "path of a file involved (evidence)")
	fs.StringVar(&fileSHA, "sha256", "", "SHA-256 of --file")
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 1, "ALERT_ID"); err != nil {
			return err
		}
		sev, err := parseEnum(commonv1.Severity(0).Descriptor(), severity)
		if err != nil {
			return err
		}
		a := &riskv1.Alert{
			AlertId: args[0], DeviceId: device, Severity: commonv1.Severity(sev), Title: title,
			Category: category, Description: description, DetectionSource: "condaccess-cli",
		}
		if filePath != "" || fileSHA != "" {
			a.Evidence = append(a.Evidence, &commonv1.Evidence{Kind: &commonv1.Evidence_File{File: &commonv1.FileEvidence{Path: filePath, Sha256: fileSHA}}})
		}
		client, err := c.risk()
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		resp, err := client.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: a})
		if err != nil {
			return err
		}
		if c.json() {
			return c.printJSON(resp)
		}
		if !resp.GetCreated() {
			fmt.Fprintln(c.stderr, "(already reported: nothing changed)")
		}
		c.printAlert(resp.GetAlert(), [2]string{"device risk", short(resp.GetDeviceRisk().GetLevel())})
		return nil
	}
}

func alertsGet(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 1, "ALERT_ID"); err != nil {
			return err
		}
		client, err := c.risk()
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		resp, err := client.GetAlert(ctx, &riskv1.GetAlertRequest{AlertId: args[0]})
		if err != nil {
			return err
		}
		if c.json() {
			return c.printJSON(resp.GetAlert())
		}
		c.printAlert(resp.GetAlert())
		return nil
	}
}

func alertsList(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	var page pageFlags
	var device, st, minSev string
	page.register(fs)
	fs.StringVar(&device, "device", "", "keep one device's alerts")
	fs.StringVar(&st, "status", "", "keep one status: new, in-progress, resolved")
	fs.StringVar(&minSev, "min-severity", "", "keep alerts at or above: informational, low, medium, high")
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 0, "no argument"); err != nil {
			return err
		}
		s, err := parseEnum(riskv1.AlertStatus(0).Descriptor(), st)
		if err != nil {
			return err
		}
		sev, err := parseEnum(commonv1.Severity(0).Descriptor(), minSev)
		if err != nil {
			return err
		}
		client, err := c.risk()
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		resp, err := client.ListAlerts(ctx, &riskv1.ListAlertsRequest{
			PageSize: int32(page.size), PageToken: page.token, DeviceId: device,
			Status: riskv1.AlertStatus(s), MinSeverity: commonv1.Severity(sev),
		})
		if err != nil {
			return err
		}
		if c.json() {
			return c.printJSON(resp)
		}
		rows := make([][]string, 0, len(resp.GetAlerts()))
		for _, a := range resp.GetAlerts() {
			rows = append(rows, []string{a.GetAlertId(), a.GetDeviceId(), short(a.GetSeverity()), short(a.GetStatus()),
				ts(a.GetDetectTime()), a.GetTitle()})
		}
		c.table([]string{"ALERT", "DEVICE", "SEVERITY", "STATUS", "DETECTED", "TITLE"}, rows)
		c.morePages(resp.GetNextPageToken())
		return nil
	}
}

func alertsResolve(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	var classification, determination, comment string
	fs.StringVar(&classification, "classification", "true-positive", "true-positive, false-positive, informational-expected")
	fs.StringVar(&determination, "determination", "", "malware, phishing, security-testing, not-malicious, other, ...")
	fs.StringVar(&comment, "comment", "", "why")
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 1, "ALERT_ID"); err != nil {
			return err
		}
		cl, err := parseEnum(riskv1.AlertClassification(0).Descriptor(), classification)
		if err != nil {
			return err
		}
		det, err := parseEnum(riskv1.AlertDetermination(0).Descriptor(), determination)
		if err != nil {
			return err
		}
		client, err := c.risk()
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		resp, err := client.ResolveAlert(ctx, &riskv1.ResolveAlertRequest{
			AlertId: args[0], Classification: riskv1.AlertClassification(cl),
			Determination: riskv1.AlertDetermination(det), Comment: comment,
		})
		if err != nil {
			return err
		}
		if c.json() {
			return c.printJSON(resp)
		}
		c.printAlert(resp.GetAlert(), [2]string{"device risk", short(resp.GetDeviceRisk().GetLevel())})
		return nil
	}
}

func alertsRisk(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 1, "DEVICE_ID"); err != nil {
			return err
		}
		client, err := c.risk()
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		resp, err := client.GetDeviceRisk(ctx, &riskv1.GetDeviceRiskRequest{DeviceId: args[0]})
		if err != nil {
			return err
		}
		r := resp.GetDeviceRisk()
		if c.json() {
			return c.printJSON(r)
		}
		c.fields([][2]string{
			{"device", r.GetDeviceId()},
			{"risk", short(r.GetLevel())},
			{"active alerts", orDash(strings.Join(r.GetActiveAlertIds(), ", "))},
			{"changed", ts(r.GetUpdateTime())},
			{"revision", fmt.Sprint(r.GetRevision())},
		})
		return nil
	}
}

func (c *cli) printAlert(a *riskv1.Alert, extra ...[2]string) {
	kv := [][2]string{
		{"alert", a.GetAlertId()},
		{"device", a.GetDeviceId()},
		{"severity", short(a.GetSeverity())},
		{"status", short(a.GetStatus())},
		{"title", a.GetTitle()},
		{"category", orDash(a.GetCategory())},
		{"detected", ts(a.GetDetectTime())},
		{"source", orDash(a.GetDetectionSource())},
	}
	for _, e := range a.GetEvidence() {
		switch k := e.GetKind().(type) {
		case *commonv1.Evidence_File:
			kv = append(kv, [2]string{"evidence", fmt.Sprintf("file %s sha256 %s", k.File.GetPath(), orDash(k.File.GetSha256()))})
		case *commonv1.Evidence_Process:
			kv = append(kv, [2]string{"evidence", fmt.Sprintf("process %d %s", k.Process.GetPid(), k.Process.GetName())})
		}
	}
	if a.GetStatus() == riskv1.AlertStatus_ALERT_STATUS_RESOLVED {
		kv = append(kv,
			[2]string{"classification", short(a.GetClassification())},
			[2]string{"determination", short(a.GetDetermination())},
			[2]string{"resolved by", orDash(a.GetResolvedBy())},
			[2]string{"resolved", ts(a.GetResolveTime())},
			[2]string{"comment", orDash(a.GetResolutionComment())},
			[2]string{"investigation", orDash(a.GetInvestigationId())},
		)
	}
	c.fields(append(kv, extra...))
}
