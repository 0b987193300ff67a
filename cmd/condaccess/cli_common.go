package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/peers"
	"github.com/condaccess/condaccess/internal/server"
)

// clientOptions are the flags every admin command shares: where the suite is, how to
// authenticate, and how to print.
type clientOptions struct {
	server                          string
	riskAddr, complianceAddr        string
	accessAddr, remediationAddr     string
	output                          string
	tlsCA, tlsCert, tlsKey, tlsName string
	timeout                         time.Duration
}

func (o *clientOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.server, "server", "127.0.0.1:7400", "gRPC address of the suite (all-in-one serve): "+peers.Syntax)
	fs.StringVar(&o.riskAddr, "risk-addr", "", "gRPC address of the risk service (overrides --server), same syntax as --server")
	fs.StringVar(&o.complianceAddr, "compliance-addr", "", "gRPC address of the compliance service (overrides --server), same syntax as --server")
	fs.StringVar(&o.accessAddr, "access-addr", "", "gRPC address of the access service (overrides --server), same syntax as --server")
	fs.StringVar(&o.remediationAddr, "remediation-addr", "", "gRPC address of the remediation service (overrides --server), same syntax as --server")
	fs.StringVar(&o.output, "o", "table", "output: table (for people) or json (protojson, for scripts)")
	fs.StringVar(&o.tlsCA, "tls-ca", "", "PEM CA bundle the server certificate must chain to; enables mutual TLS")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "PEM client certificate (its URI SAN carries the caller's role)")
	fs.StringVar(&o.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&o.tlsName, "tls-server-name", "", "server name to verify in the server certificate")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "deadline of each call (not of watch)")
}

// addr returns the address of one service.
func (o *clientOptions) addr(service string) string {
	var a string
	switch service {
	case "risk":
		a = o.riskAddr
	case "compliance":
		a = o.complianceAddr
	case "access":
		a = o.accessAddr
	case "remediation":
		a = o.remediationAddr
	}
	if a == "" {
		a = o.server
	}
	return a
}

// clientConfig maps the TLS flags to auth.ClientConfig: plaintext only towards a
// loopback address, where serve runs in development mode.
func (o *clientOptions) clientConfig(addr peers.Target) (auth.ClientConfig, error) {
	tlsOn := o.tlsCA != "" || o.tlsCert != "" || o.tlsKey != ""
	if !tlsOn {
		if !addr.IsLoopback() {
			return auth.ClientConfig{}, fmt.Errorf("%w: %s is not a loopback address: mutual TLS is needed (--tls-ca, --tls-cert, --tls-key)", errUsage, addr)
		}
		return auth.ClientConfig{Insecure: true}, nil
	}
	if o.tlsCA == "" || o.tlsCert == "" || o.tlsKey == "" {
		return auth.ClientConfig{}, fmt.Errorf("%w: mutual TLS needs --tls-ca, --tls-cert and --tls-key together", errUsage)
	}
	return auth.ClientConfig{CAFile: o.tlsCA, CertFile: o.tlsCert, KeyFile: o.tlsKey, ServerName: o.tlsName}, nil
}

// cli is one admin command invocation: its options, output and connections.
type cli struct {
	clientOptions
	stdout, stderr io.Writer
	conns          map[string]*grpc.ClientConn
	// directHealth turns client-side health checking off (the health command asks a
	// server for its status, so it must reach one that is not SERVING).
	directHealth bool
}

func newCLI(stdout, stderr io.Writer) *cli {
	return &cli{stdout: stdout, stderr: stderr, conns: map[string]*grpc.ClientConn{}}
}

// conn returns a (cached) connection to the service's address.
func (c *cli) conn(service string) (*grpc.ClientConn, error) {
	addr := c.addr(service)
	if cc, ok := c.conns[addr]; ok {
		return cc, nil
	}
	target, err := peers.Parse(addr)
	if err != nil {
		return nil, fmt.Errorf("%w: address of the %s service: %v", errUsage, service, err)
	}
	cfg, err := c.clientConfig(target)
	if err != nil {
		return nil, err
	}
	opts, err := server.DialOptions(cfg)
	if err != nil {
		return nil, err
	}
	if c.directHealth {
		opts = append(opts, grpc.WithDisableHealthCheck())
	}
	cc, err := peers.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	c.conns[addr] = cc
	return cc, nil
}

func (c *cli) close() {
	for _, cc := range c.conns {
		_ = cc.Close()
	}
}

func (c *cli) risk() (riskv1.RiskServiceClient, error) {
	cc, err := c.conn("risk")
	if err != nil {
		return nil, err
	}
	return riskv1.NewRiskServiceClient(cc), nil
}

func (c *cli) devices() (compliancev1.DeviceServiceClient, error) {
	cc, err := c.conn("compliance")
	if err != nil {
		return nil, err
	}
	return compliancev1.NewDeviceServiceClient(cc), nil
}

func (c *cli) compliancePolicies() (compliancev1.CompliancePolicyServiceClient, error) {
	cc, err := c.conn("compliance")
	if err != nil {
		return nil, err
	}
	return compliancev1.NewCompliancePolicyServiceClient(cc), nil
}

func (c *cli) compliance() (compliancev1.ComplianceServiceClient, error) {
	cc, err := c.conn("compliance")
	if err != nil {
		return nil, err
	}
	return compliancev1.NewComplianceServiceClient(cc), nil
}

func (c *cli) directory() (accessv1.DirectoryServiceClient, error) {
	cc, err := c.conn("access")
	if err != nil {
		return nil, err
	}
	return accessv1.NewDirectoryServiceClient(cc), nil
}

func (c *cli) caPolicies() (accessv1.ConditionalAccessPolicyServiceClient, error) {
	cc, err := c.conn("access")
	if err != nil {
		return nil, err
	}
	return accessv1.NewConditionalAccessPolicyServiceClient(cc), nil
}

func (c *cli) access() (accessv1.AccessServiceClient, error) {
	cc, err := c.conn("access")
	if err != nil {
		return nil, err
	}
	return accessv1.NewAccessServiceClient(cc), nil
}

func (c *cli) remediation() (remediationv1.RemediationServiceClient, error) {
	cc, err := c.conn("remediation")
	if err != nil {
		return nil, err
	}
	return remediationv1.NewRemediationServiceClient(cc), nil
}

// callCtx bounds one call by --timeout.
func (c *cli) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.timeout)
}

// json reports whether -o json was asked for.
func (c *cli) json() bool { return c.output == "json" }

// printJSON writes m as one protojson document.
func (c *cli) printJSON(m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.stdout, "%s\n", b)
	return err
}

// printJSONLine writes m as one protojson document on one line (for streams).
func (c *cli) printJSONLine(m proto.Message) error {
	b, err := protojson.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.stdout, "%s\n", b)
	return err
}

// table prints rows under a header, aligned.
func (c *cli) table(header []string, rows [][]string) {
	tw := tabwriter.NewWriter(c.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

// fields prints one resource as "name: value" lines.
func (c *cli) fields(kv [][2]string) {
	tw := tabwriter.NewWriter(c.stdout, 2, 4, 2, ' ', 0)
	for _, f := range kv {
		fmt.Fprintf(tw, "%s:\t%s\n", f[0], f[1])
	}
	tw.Flush()
}

// morePages tells a person how to fetch the next page.
func (c *cli) morePages(token string) {
	if token != "" && !c.json() {
		fmt.Fprintf(c.stderr, "(more: --page-token %s)\n", token)
	}
}

// verb is one action of a command group (devices get, alerts list, ...): setup
// registers its flags and returns the function run after parsing.
type verb struct {
	summary string
	setup   func(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error
}

// group runs a command group: "condaccess <group> <verb> [flags] [args]".
func group(name string, verbs map[string]verb) func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		groupUsage := func() {
			fmt.Fprintf(stderr, "usage: condaccess %s <verb> [flags] [args]\n\nverbs:\n", name)
			names := make([]string, 0, len(verbs))
			for n := range verbs {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				fmt.Fprintf(stderr, "  %-12s %s\n", n, verbs[n].summary)
			}
			fmt.Fprintf(stderr, "\nRun 'condaccess %s <verb> -h' for a verb's flags.\n", name)
		}
		if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
			groupUsage()
			if len(args) == 0 {
				return fmt.Errorf("%w: %s: no verb given", errUsage, name)
			}
			return nil
		}
		v, ok := verbs[args[0]]
		if !ok {
			groupUsage()
			return fmt.Errorf("%w: %s: unknown verb %q", errUsage, name, args[0])
		}
		c := newCLI(stdout, stderr)
		defer c.close()
		fs := flag.NewFlagSet(name+" "+args[0], flag.ContinueOnError)
		fs.SetOutput(stderr)
		c.register(fs)
		run := v.setup(fs)
		pos, err := parseInterspersed(fs, args[1:])
		if err != nil {
			return err
		}
		if err := applyEnvPrefixed(fs, clientFlagNames); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		if c.output != "table" && c.output != "json" {
			return fmt.Errorf("%w: -o must be table or json, not %q", errUsage, c.output)
		}
		return describe(run(ctx, c, pos))
	}
}

// clientFlagNames are the shared flags with an environment override
// (CONDACCESS_SERVER, CONDACCESS_TLS_CA, ...).
var clientFlagNames = map[string]bool{
	"server": true, "risk-addr": true, "compliance-addr": true, "access-addr": true, "remediation-addr": true,
	"tls-ca": true, "tls-cert": true, "tls-key": true, "tls-server-name": true,
}

// applyEnvPrefixed sets the named flags not given on the command line from
// CONDACCESS_<NAME>.
func applyEnvPrefixed(fs *flag.FlagSet, names map[string]bool) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || !names[f.Name] {
			return
		}
		env := "CONDACCESS_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", env, err))
			}
		}
	})
	return errors.Join(errs...)
}

// parseInterspersed parses flags that may come before, between or after positional
// arguments ("devices get dev-1 -o json"); "--" ends the flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// fs.Parse stops at the first non-flag or after "--".
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// describe turns a gRPC status into a one-line error a person can act on: code,
// message, reason and field violations.
func describe(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() == codes.OK {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s", st.Code(), st.Message())
	if r := apierr.Reason(err); r != "" {
		fmt.Fprintf(&b, " (reason %s)", r)
	}
	for _, v := range apierr.Violations(err) {
		fmt.Fprintf(&b, "\n  %s: %s", v.GetField(), v.GetDescription())
	}
	if st.Code() == codes.Unavailable {
		b.WriteString("\n  is the suite running? start it with 'condaccess serve' or point --server at it")
	}
	return errors.New(b.String())
}

// needArgs checks the number of positional arguments.
func needArgs(args []string, n int, what string) error {
	if len(args) != n {
		return fmt.Errorf("%w: want %s, got %d argument(s)", errUsage, what, len(args))
	}
	return nil
}

// parseEnum parses a short or full enum value name: "high", "SEVERITY_HIGH",
// "in-grace-period". An empty string is the zero value.
func parseEnum(ed protoreflect.EnumDescriptor, s string) (protoreflect.EnumNumber, error) {
	if s == "" {
		return 0, nil
	}
	name := strings.ToUpper(strings.ReplaceAll(s, "-", "_"))
	prefix := enumPrefix(ed)
	for _, cand := range []string{name, prefix + name} {
		if v := ed.Values().ByName(protoreflect.Name(cand)); v != nil {
			return v.Number(), nil
		}
	}
	var want []string
	for i := 0; i < ed.Values().Len(); i++ {
		if v := ed.Values().Get(i); v.Number() != 0 {
			want = append(want, strings.ToLower(strings.TrimPrefix(string(v.Name()), prefix)))
		}
	}
	return 0, fmt.Errorf("%w: %q is not a %s (want one of %s)", errUsage, s, ed.Name(), strings.Join(want, ", "))
}

// enumPrefix is the value prefix of an enum: SEVERITY_ for Severity.
func enumPrefix(ed protoreflect.EnumDescriptor) string {
	var b strings.Builder
	for i, r := range string(ed.Name()) {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String()) + "_"
}

// short prints an enum value without its prefix: SEVERITY_HIGH → HIGH.
func short(e protoreflect.Enum) string {
	v := e.Descriptor().Values().ByNumber(e.Number())
	if v == nil {
		return fmt.Sprint(e.Number())
	}
	if e.Number() == 0 {
		return "-"
	}
	return strings.TrimPrefix(string(v.Name()), enumPrefix(e.Descriptor()))
}

// ts prints a timestamp in local time, "-" when unset.
func ts(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().Local().Format("2006-01-02 15:04:05")
}

// orDash prints "-" for an empty string.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// pageFlags are the AIP-158 paging flags of list verbs.
type pageFlags struct {
	size  int
	token string
}

func (p *pageFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&p.size, "page-size", 0, "maximum number of items (0: the server's default)")
	fs.StringVar(&p.token, "page-token", "", "next page token printed by a previous list")
}
