package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
)

func init() {
	register("policies", "apply resources from YAML; list, show and delete compliance and Conditional Access policies", group("policies", map[string]verb{
		"apply":  {"create or update the resources of a YAML file: policies apply -f FILE (- for stdin)", policiesApply},
		"list":   {"list compliance and Conditional Access policies", policiesList},
		"get":    {"show a policy: policies get POLICY_ID [--kind compliance|conditional-access]", policiesGet},
		"delete": {"delete a policy: policies delete POLICY_ID [--kind compliance|conditional-access]", policiesDelete},
	}))
}

// manifest is one YAML document of policies apply: a kind and a spec in proto JSON
// field names.
type manifest struct {
	Kind string          `json:"kind"`
	Spec json.RawMessage `json:"spec"`
}

// Kinds accepted by policies apply.
const (
	kindCompliancePolicy = "CompliancePolicy"
	kindCAPolicy         = "ConditionalAccessPolicy"
	kindUser             = "User"
	kindGroup            = "Group"
	kindApplication      = "Application"
	kindDevice           = "Device"
)

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// parseManifests splits a YAML stream into documents; a document is a mapping with
// kind and spec, or a list of them.
func parseManifests(data []byte) ([]manifest, error) {
	var out []manifest
	for i, doc := range docSeparator.Split(string(data), -1) {
		j, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		j = bytes.TrimSpace(j)
		if len(j) == 0 || string(j) == "null" {
			continue
		}
		var docs []manifest
		if j[0] == '[' {
			if err := json.Unmarshal(j, &docs); err != nil {
				return nil, fmt.Errorf("document %d: %w", i+1, err)
			}
		} else {
			var m manifest
			dec := json.NewDecoder(bytes.NewReader(j))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&m); err != nil {
				return nil, fmt.Errorf("document %d: want kind and spec: %w", i+1, err)
			}
			docs = []manifest{m}
		}
		for k, m := range docs {
			if m.Kind == "" || len(m.Spec) == 0 {
				return nil, fmt.Errorf("document %d item %d: kind and spec are required", i+1, k+1)
			}
			out = append(out, m)
		}
	}
	return out, nil
}

// specMessage returns an empty message for kind.
func specMessage(kind string) (proto.Message, error) {
	switch kind {
	case kindCompliancePolicy:
		return &compliancev1.CompliancePolicy{}, nil
	case kindCAPolicy:
		return &accessv1.ConditionalAccessPolicy{}, nil
	case kindUser:
		return &accessv1.User{}, nil
	case kindGroup:
		return &accessv1.Group{}, nil
	case kindApplication:
		return &accessv1.Application{}, nil
	case kindDevice:
		return &compliancev1.Device{}, nil
	}
	return nil, fmt.Errorf("unknown kind %q (want %s)", kind, strings.Join([]string{kindCompliancePolicy, kindCAPolicy, kindUser, kindGroup, kindApplication, kindDevice}, ", "))
}

// decodeManifest turns a manifest's spec into its proto message, strictly.
func decodeManifest(m manifest) (proto.Message, error) {
	msg, err := specMessage(m.Kind)
	if err != nil {
		return nil, err
	}
	if err := protojson.Unmarshal(m.Spec, msg); err != nil {
		return nil, fmt.Errorf("%s spec: %w", m.Kind, err)
	}
	return msg, nil
}

func policiesApply(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	var file string
	fs.StringVar(&file, "f", "", "YAML file of resources (kind + spec); - reads stdin")
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 0, "no argument (use -f FILE)"); err != nil {
			return err
		}
		if file == "" {
			return fmt.Errorf("%w: -f FILE is required", errUsage)
		}
		var data []byte
		var err error
		if file == "-" {
			data, err = io.ReadAll(os.Stdin)
		} else {
			data, err = os.ReadFile(file)
		}
		if err != nil {
			return err
		}
		docs, err := parseManifests(data)
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		msgs := make([]proto.Message, len(docs))
		for i, d := range docs {
			if msgs[i], err = decodeManifest(d); err != nil {
				return fmt.Errorf("%s: resource %d: %w", file, i+1, err)
			}
		}
		var rows [][]string
		for i, m := range msgs {
			id, action, err := c.apply(ctx, m)
			if err != nil {
				return fmt.Errorf("%s %s: %w", docs[i].Kind, id, describe(err))
			}
			if c.json() {
				if err := c.printJSONLine(m); err != nil {
					return err
				}
			}
			rows = append(rows, []string{docs[i].Kind, id, action})
		}
		if !c.json() {
			c.table([]string{"KIND", "ID", "RESULT"}, rows)
		}
		return nil
	}
}

// apply creates m, or updates it with the current etag when it exists. On return m
// holds the stored resource.
func (c *cli) apply(ctx context.Context, m proto.Message) (id, action string, err error) {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	switch r := m.(type) {
	case *compliancev1.CompliancePolicy:
		client, err := c.compliancePolicies()
		if err != nil {
			return r.GetPolicyId(), "", err
		}
		action, err := upsert(r, func(e string) { r.Etag = e },
			func() (*compliancev1.CompliancePolicy, error) {
				resp, err := client.CreateCompliancePolicy(ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: r})
				return resp.GetPolicy(), err
			},
			func() (string, error) {
				resp, err := client.GetCompliancePolicy(ctx, &compliancev1.GetCompliancePolicyRequest{PolicyId: r.GetPolicyId()})
				return resp.GetPolicy().GetEtag(), err
			},
			func() (*compliancev1.CompliancePolicy, error) {
				resp, err := client.UpdateCompliancePolicy(ctx, &compliancev1.UpdateCompliancePolicyRequest{Policy: r})
				return resp.GetPolicy(), err
			})
		return r.GetPolicyId(), action, err
	case *accessv1.ConditionalAccessPolicy:
		client, err := c.caPolicies()
		if err != nil {
			return r.GetPolicyId(), "", err
		}
		action, err := upsert(r, func(e string) { r.Etag = e },
			func() (*accessv1.ConditionalAccessPolicy, error) {
				resp, err := client.CreatePolicy(ctx, &accessv1.CreatePolicyRequest{Policy: r})
				return resp.GetPolicy(), err
			},
			func() (string, error) {
				resp, err := client.GetPolicy(ctx, &accessv1.GetPolicyRequest{PolicyId: r.GetPolicyId()})
				return resp.GetPolicy().GetEtag(), err
			},
			func() (*accessv1.ConditionalAccessPolicy, error) {
				resp, err := client.UpdatePolicy(ctx, &accessv1.UpdatePolicyRequest{Policy: r})
				return resp.GetPolicy(), err
			})
		return r.GetPolicyId(), action, err
	case *accessv1.User:
		client, err := c.directory()
		if err != nil {
			return r.GetUserId(), "", err
		}
		action, err := upsert(r, func(e string) { r.Etag = e },
			func() (*accessv1.User, error) {
				resp, err := client.CreateUser(ctx, &accessv1.CreateUserRequest{User: r})
				return resp.GetUser(), err
			},
			func() (string, error) {
				resp, err := client.GetUser(ctx, &accessv1.GetUserRequest{UserId: r.GetUserId()})
				return resp.GetUser().GetEtag(), err
			},
			func() (*accessv1.User, error) {
				resp, err := client.UpdateUser(ctx, &accessv1.UpdateUserRequest{User: r})
				return resp.GetUser(), err
			})
		return r.GetUserId(), action, err
	case *accessv1.Group:
		client, err := c.directory()
		if err != nil {
			return r.GetGroupId(), "", err
		}
		action, err := upsert(r, func(e string) { r.Etag = e },
			func() (*accessv1.Group, error) {
				resp, err := client.CreateGroup(ctx, &accessv1.CreateGroupRequest{Group: r})
				return resp.GetGroup(), err
			},
			func() (string, error) {
				resp, err := client.GetGroup(ctx, &accessv1.GetGroupRequest{GroupId: r.GetGroupId()})
				return resp.GetGroup().GetEtag(), err
			},
			func() (*accessv1.Group, error) {
				resp, err := client.UpdateGroup(ctx, &accessv1.UpdateGroupRequest{Group: r})
				return resp.GetGroup(), err
			})
		return r.GetGroupId(), action, err
	case *accessv1.Application:
		client, err := c.directory()
		if err != nil {
			return r.GetApplicationId(), "", err
		}
		action, err := upsert(r, func(e string) { r.Etag = e },
			func() (*accessv1.Application, error) {
				resp, err := client.CreateApplication(ctx, &accessv1.CreateApplicationRequest{Application: r})
				return resp.GetApplication(), err
			},
			func() (string, error) {
				resp, err := client.GetApplication(ctx, &accessv1.GetApplicationRequest{ApplicationId: r.GetApplicationId()})
				return resp.GetApplication().GetEtag(), err
			},
			func() (*accessv1.Application, error) {
				resp, err := client.UpdateApplication(ctx, &accessv1.UpdateApplicationRequest{Application: r})
				return resp.GetApplication(), err
			})
		return r.GetApplicationId(), action, err
	case *compliancev1.Device:
		client, err := c.devices()
		if err != nil {
			return r.GetDeviceId(), "", err
		}
		action, err := upsert(r, func(e string) { r.Etag = e },
			func() (*compliancev1.Device, error) {
				resp, err := client.EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: r})
				return resp.GetDevice(), err
			},
			func() (string, error) {
				resp, err := client.GetDevice(ctx, &compliancev1.GetDeviceRequest{DeviceId: r.GetDeviceId()})
				return resp.GetDevice().GetEtag(), err
			},
			func() (*compliancev1.Device, error) {
				resp, err := client.UpdateDevice(ctx, &compliancev1.UpdateDeviceRequest{Device: r})
				return resp.GetDevice(), err
			})
		return r.GetDeviceId(), action, err
	}
	return "", "", fmt.Errorf("cannot apply %T", m)
}

// upsert creates r; when it already exists (ALREADY_EXISTS), it reads the stored
// resource's etag and updates r with it. On success r holds the stored resource and the action is
// "created" or "updated".
func upsert[R proto.Message](r R, setEtag func(string), create func() (R, error), etag func() (string, error), update func() (R, error)) (string, error) {
	stored, err := create()
	if err == nil {
		proto.Merge(r, stored)
		return "created", nil
	}
	if status.Code(err) != codes.AlreadyExists {
		return "", err
	}
	cur, err := etag()
	if err != nil {
		return "", err
	}
	setEtag(cur)
	stored, err = update()
	if err != nil {
		return "", err
	}
	proto.Reset(r)
	proto.Merge(r, stored)
	return "updated", nil
}

// policyKind parses --kind.
func policyKind(s string) (compliance, ca bool, err error) {
	switch strings.ToLower(s) {
	case "":
		return true, true, nil
	case "compliance", "compliancepolicy":
		return true, false, nil
	case "conditional-access", "ca", "conditionalaccesspolicy", "access":
		return false, true, nil
	}
	return false, false, fmt.Errorf("%w: --kind must be compliance or conditional-access, not %q", errUsage, s)
}

func policiesList(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	var kind string
	fs.StringVar(&kind, "kind", "", "compliance or conditional-access (default: both)")
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 0, "no argument"); err != nil {
			return err
		}
		wantCompliance, wantCA, err := policyKind(kind)
		if err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		var rows [][]string
		if wantCompliance {
			client, err := c.compliancePolicies()
			if err != nil {
				return err
			}
			token := ""
			for {
				resp, err := client.ListCompliancePolicies(ctx, &compliancev1.ListCompliancePoliciesRequest{PageSize: 1000, PageToken: token})
				if err != nil {
					return err
				}
				for _, p := range resp.GetPolicies() {
					if c.json() {
						if err := c.printManifestLine(kindCompliancePolicy, p); err != nil {
							return err
						}
						continue
					}
					rows = append(rows, []string{kindCompliancePolicy, p.GetPolicyId(), "-", p.GetDisplayName(), compliancePolicySummary(p)})
				}
				if token = resp.GetNextPageToken(); token == "" {
					break
				}
			}
		}
		if wantCA {
			client, err := c.caPolicies()
			if err != nil {
				return err
			}
			token := ""
			for {
				resp, err := client.ListPolicies(ctx, &accessv1.ListPoliciesRequest{PageSize: 1000, PageToken: token})
				if err != nil {
					return err
				}
				for _, p := range resp.GetPolicies() {
					if c.json() {
						if err := c.printManifestLine(kindCAPolicy, p); err != nil {
							return err
						}
						continue
					}
					rows = append(rows, []string{kindCAPolicy, p.GetPolicyId(), short(p.GetState()), p.GetDisplayName(), caPolicySummary(p)})
				}
				if token = resp.GetNextPageToken(); token == "" {
					break
				}
			}
		}
		if !c.json() {
			c.table([]string{"KIND", "ID", "STATE", "NAME", "SUMMARY"}, rows)
		}
		return nil
	}
}

// printManifestLine prints a resource as one JSON line {"kind":..., "spec":...}, the
// shape policies apply reads back.
func (c *cli) printManifestLine(kind string, m proto.Message) error {
	spec, err := protojson.Marshal(m)
	if err != nil {
		return err
	}
	b, err := json.Marshal(manifest{Kind: kind, Spec: spec})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.stdout, "%s\n", b)
	return err
}

func compliancePolicySummary(p *compliancev1.CompliancePolicy) string {
	var parts []string
	if p.GetMaxDeviceRisk() != 0 {
		parts = append(parts, "risk <= "+short(p.GetMaxDeviceRisk()))
	}
	if p.GetMinOsVersion() != "" {
		parts = append(parts, "os >= "+p.GetMinOsVersion())
	}
	a := p.GetAssignment()
	switch {
	case a.GetAllDevices():
		parts = append(parts, "all devices")
	case len(a.GetIncludeGroups()) > 0:
		parts = append(parts, "groups "+strings.Join(a.GetIncludeGroups(), ","))
	}
	return orDash(strings.Join(parts, "; "))
}

func caPolicySummary(p *accessv1.ConditionalAccessPolicy) string {
	var parts []string
	if p.GetApplications().GetAll() {
		parts = append(parts, "all apps")
	} else if len(p.GetApplications().GetInclude()) > 0 {
		parts = append(parts, "apps "+strings.Join(p.GetApplications().GetInclude(), ","))
	}
	g := p.GetGrantControls()
	if g.GetBlock() {
		parts = append(parts, "block")
	} else {
		var req []string
		for _, r := range g.GetRequire() {
			req = append(req, strings.ToLower(short(r)))
		}
		parts = append(parts, "require "+strings.Join(req, " "+strings.ToLower(orDefault(short(g.GetOperator()), "and"))+" "))
	}
	return strings.Join(parts, "; ")
}

func orDefault(s, d string) string {
	if s == "-" || s == "" {
		return d
	}
	return s
}

// findPolicy fetches a policy of either kind by id.
func (c *cli) findPolicy(ctx context.Context, id, kind string) (proto.Message, error) {
	wantCompliance, wantCA, err := policyKind(kind)
	if err != nil {
		return nil, err
	}
	var found []proto.Message
	if wantCA {
		client, err := c.caPolicies()
		if err != nil {
			return nil, err
		}
		resp, err := client.GetPolicy(ctx, &accessv1.GetPolicyRequest{PolicyId: id})
		if err != nil && (status.Code(err) != codes.NotFound || !wantCompliance) {
			return nil, err
		}
		if err == nil {
			found = append(found, resp.GetPolicy())
		}
	}
	if wantCompliance {
		client, err := c.compliancePolicies()
		if err != nil {
			return nil, err
		}
		resp, err := client.GetCompliancePolicy(ctx, &compliancev1.GetCompliancePolicyRequest{PolicyId: id})
		if err != nil && (status.Code(err) != codes.NotFound || !wantCA) {
			return nil, err
		}
		if err == nil {
			found = append(found, resp.GetPolicy())
		}
	}
	switch len(found) {
	case 0:
		return nil, status.Errorf(codes.NotFound, "no compliance or Conditional Access policy %q", id)
	case 1:
		return found[0], nil
	}
	return nil, fmt.Errorf("%w: %q is both a compliance and a Conditional Access policy: say which with --kind", errUsage, id)
}

func policiesGet(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	var kind string
	fs.StringVar(&kind, "kind", "", "compliance or conditional-access (default: whichever has the id)")
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 1, "POLICY_ID"); err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		p, err := c.findPolicy(ctx, args[0], kind)
		if err != nil {
			return err
		}
		if c.json() {
			return c.printJSON(p)
		}
		// People read the policy as the YAML that policies apply takes.
		k := kindCompliancePolicy
		if _, ok := p.(*accessv1.ConditionalAccessPolicy); ok {
			k = kindCAPolicy
		}
		spec, err := protojson.Marshal(p)
		if err != nil {
			return err
		}
		doc, err := json.Marshal(manifest{Kind: k, Spec: spec})
		if err != nil {
			return err
		}
		y, err := yaml.JSONToYAML(doc)
		if err != nil {
			return err
		}
		_, err = c.stdout.Write(y)
		return err
	}
}

func policiesDelete(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	var kind string
	fs.StringVar(&kind, "kind", "", "compliance or conditional-access (default: whichever has the id)")
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 1, "POLICY_ID"); err != nil {
			return err
		}
		ctx, cancel := c.callCtx(ctx)
		defer cancel()
		p, err := c.findPolicy(ctx, args[0], kind)
		if err != nil {
			return err
		}
		k := kindCompliancePolicy
		switch p := p.(type) {
		case *accessv1.ConditionalAccessPolicy:
			k = kindCAPolicy
			client, err := c.caPolicies()
			if err != nil {
				return err
			}
			if _, err := client.DeletePolicy(ctx, &accessv1.DeletePolicyRequest{PolicyId: p.GetPolicyId(), Etag: p.GetEtag()}); err != nil {
				return err
			}
		case *compliancev1.CompliancePolicy:
			client, err := c.compliancePolicies()
			if err != nil {
				return err
			}
			if _, err := client.DeleteCompliancePolicy(ctx, &compliancev1.DeleteCompliancePolicyRequest{PolicyId: p.GetPolicyId(), Etag: p.GetEtag()}); err != nil {
				return err
			}
		}
		if c.json() {
			_, err := fmt.Fprintf(c.stdout, "{\"kind\":%q,\"policyId\":%q,\"deleted\":true}\n", k, args[0])
			return err
		}
		fmt.Fprintf(c.stdout, "deleted %s %s\n", k, args[0])
		return nil
	}
}
