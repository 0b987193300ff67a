package main

import (
	"context"
	"flag"
	"strings"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
)

func init() {
	verbs := map[string]verb{
		"enroll": {"enroll a device: devices enroll DEVICE_ID --platform windows [--group g]...", devicesEnroll},
		"get":    {"show a device: devices get DEVICE_ID", devicesGet},
		"list":   {"list devices", devicesList},
		"retire": {"retire a device: devices retire DEVICE_ID", devicesRetire},
	}
	for k, v := range identityVerbs {
		verbs[k] = v
	}
	register("devices", "enroll, show, list and retire devices; enrollment tokens and device identities (compliance service)", group("devices", verbs))
}

func devicesEnroll(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	var name, platform, osVersion, owner string
	var groups stringList
	fs.StringVar(&name, "name", "", "display name")
	fs.StringVar(&platform, "platform", "", "platform: windows, macos, linux, ios, android (required)")
	fs.StringVar(&osVersion, "os-version", "", "dotted OS version, e.g. 10.0.22631")
	fs.StringVar(&owner, "owner", "", "owner user id")
	fs.Var(&groups, "group", "device group (repeatable)")
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 1, "DEVICE_ID"); err != nil {
			return err
		}
		p, err := parseEnum(commonv1.Platform(0).Descriptor(), platform)
		if err != nil {
			return err
		}
		client, err := c.devices()
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		resp, err := client.EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
			DeviceId: args[0], DisplayName: name, Platform: commonv1.Platform(p), OsVersion: osVersion,
			OwnerUserId: owner, Groups: groups,
		}})
		if err != nil {
			return err
		}
		return c.printDevice(resp.GetDevice())
	}
}

func devicesGet(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 1, "DEVICE_ID"); err != nil {
			return err
		}
		client, err := c.devices()
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		resp, err := client.GetDevice(ctx, &compliancev1.GetDeviceRequest{DeviceId: args[0]})
		if err != nil {
			return err
		}
		return c.printDevice(resp.GetDevice())
	}
}

func devicesList(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	var page pageFlags
	var platform, grp, owner string
	var retired bool
	page.register(fs)
	fs.StringVar(&platform, "platform", "", "keep one platform")
	fs.StringVar(&grp, "group", "", "keep one device group")
	fs.StringVar(&owner, "owner", "", "keep one owner")
	fs.BoolVar(&retired, "include-retired", false, "include retired devices")
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 0, "no argument"); err != nil {
			return err
		}
		p, err := parseEnum(commonv1.Platform(0).Descriptor(), platform)
		if err != nil {
			return err
		}
		client, err := c.devices()
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		resp, err := client.ListDevices(ctx, &compliancev1.ListDevicesRequest{
			PageSize: int32(page.size), PageToken: page.token, Platform: commonv1.Platform(p),
			Group: grp, OwnerUserId: owner, IncludeRetired: retired,
		})
		if err != nil {
			return err
		}
		if c.json() {
			return c.printJSON(resp)
		}
		rows := make([][]string, 0, len(resp.GetDevices()))
		for _, d := range resp.GetDevices() {
			rows = append(rows, []string{d.GetDeviceId(), orDash(d.GetDisplayName()), short(d.GetPlatform()),
				orDash(d.GetOsVersion()), orDash(d.GetOwnerUserId()), orDash(strings.Join(d.GetGroups(), ",")), yesNo(d.GetRetired())})
		}
		c.table([]string{"DEVICE", "NAME", "PLATFORM", "OS", "OWNER", "GROUPS", "RETIRED"}, rows)
		c.morePages(resp.GetNextPageToken())
		return nil
	}
}

func devicesRetire(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 1, "DEVICE_ID"); err != nil {
			return err
		}
		client, err := c.devices()
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		resp, err := client.RetireDevice(ctx, &compliancev1.RetireDeviceRequest{DeviceId: args[0]})
		if err != nil {
			return err
		}
		return c.printDevice(resp.GetDevice())
	}
}

func (c *cli) printDevice(d *compliancev1.Device) error {
	if c.json() {
		return c.printJSON(d)
	}
	c.fields([][2]string{
		{"device", d.GetDeviceId()},
		{"name", orDash(d.GetDisplayName())},
		{"platform", short(d.GetPlatform())},
		{"os version", orDash(d.GetOsVersion())},
		{"owner", orDash(d.GetOwnerUserId())},
		{"groups", orDash(strings.Join(d.GetGroups(), ", "))},
		{"enrolled", ts(d.GetEnrollTime())},
		{"last seen", ts(d.GetLastSeenTime())},
		{"retired", yesNo(d.GetRetired())},
		{"etag", orDash(d.GetEtag())},
	})
	return nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
