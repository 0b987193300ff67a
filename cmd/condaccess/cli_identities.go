package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
)

// identityVerbs are the device identity verbs of `condaccess devices`.
var identityVerbs = map[string]verb{
	"enroll-token":    {"create a single-use enrollment token: devices enroll-token DEVICE_ID [--ttl 1h]", devicesEnrollToken},
	"revoke-identity": {"revoke a device's identity: devices revoke-identity DEVICE_ID [--reason ...]", devicesRevokeIdentity},
	"identities":      {"list device identities (certificate serial, not-after, state)", devicesIdentities},
}

func (c *cli) deviceIdentities() (compliancev1.DeviceIdentityServiceClient, error) {
	cc, err := c.conn("compliance")
	if err != nil {
		return nil, err
	}
	return compliancev1.NewDeviceIdentityServiceClient(cc), nil
}

func devicesEnrollToken(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	ttl := fs.Duration("ttl", time.Hour, "token lifetime (at most 7 days)")
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 1, "DEVICE_ID"); err != nil {
			return err
		}
		client, err := c.deviceIdentities()
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		resp, err := client.CreateEnrollmentToken(ctx, &compliancev1.CreateEnrollmentTokenRequest{DeviceId: args[0], Ttl: durationpb.New(*ttl)})
		if err != nil {
			return err
		}
		if c.json() {
			return c.printJSON(resp)
		}
		// The token alone on stdout, so that scripts can capture it.
		fmt.Fprintln(c.stdout, resp.GetToken())
		fmt.Fprintf(c.stderr, "single-use token for %s, valid until %s: condaccess-agent enroll --token TOKEN --state-dir DIR\n",
			args[0], ts(resp.GetExpireTime()))
		return nil
	}
}

func devicesRevokeIdentity(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	reason := fs.String("reason", "", "reason recorded with the revocation")
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 1, "DEVICE_ID"); err != nil {
			return err
		}
		client, err := c.deviceIdentities()
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		resp, err := client.RevokeDeviceIdentity(ctx, &compliancev1.RevokeDeviceIdentityRequest{DeviceId: args[0], Reason: *reason})
		if err != nil {
			return err
		}
		if c.json() {
			return c.printJSON(resp)
		}
		id := resp.GetIdentity()
		c.fields([][2]string{{"device", id.GetDeviceId()}, {"state", short(id.GetState())}, {"revoked", ts(id.GetRevokeTime())},
			{"reason", orDash(id.GetRevokeReason())}})
		return nil
	}
}

func devicesIdentities(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	var page pageFlags
	page.register(fs)
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 0, "no argument"); err != nil {
			return err
		}
		client, err := c.deviceIdentities()
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		resp, err := client.ListDeviceIdentities(ctx, &compliancev1.ListDeviceIdentitiesRequest{PageSize: int32(page.size), PageToken: page.token})
		if err != nil {
			return err
		}
		if c.json() {
			return c.printJSON(resp)
		}
		rows := make([][]string, 0, len(resp.GetIdentities()))
		for _, id := range resp.GetIdentities() {
			rows = append(rows, []string{id.GetDeviceId(), id.GetSerialNumber(), ts(id.GetExpireTime()), short(id.GetState()), orDash(strings.TrimSpace(id.GetRevokeReason()))})
		}
		c.table([]string{"DEVICE", "SERIAL", "NOT AFTER", "STATE", "REVOKE REASON"}, rows)
		c.morePages(resp.GetNextPageToken())
		return nil
	}
}
