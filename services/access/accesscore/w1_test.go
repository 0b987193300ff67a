package accesscore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/condaccess/condaccess/services/access"
	"github.com/condaccess/condaccess/services/access/accesscore"
	"github.com/condaccess/condaccess/services/access/accessstore"
	pe "github.com/condaccess/condaccess/services/access/policyengine"
	"github.com/condaccess/condaccess/services/access/policyengine/w1gen"
)

func domainDirectory(d *pe.Directory) *access.Directory {
	out := &access.Directory{}
	for _, u := range d.Users {
		out.Users = append(out.Users, &access.User{ID: u.ID, Disabled: u.Disabled, EmergencyAccess: u.EmergencyAccess})
	}
	for _, g := range d.Groups {
		out.Groups = append(out.Groups, &access.Group{ID: g.ID, MemberUserIDs: g.MemberUsers, MemberGroupIDs: g.MemberGroups})
	}
	for _, a := range d.Applications {
		out.Applications = append(out.Applications, &access.Application{ID: a.ID})
	}
	return out
}

func conv[T ~int32, F ~uint8](in []F) []T {
	var out []T
	for _, v := range in {
		out = append(out, T(v))
	}
	return out
}

func domainPolicy(p *pe.Policy) *access.Policy {
	var inc, exc []string
	for _, x := range p.IncludeIPs {
		inc = append(inc, x.String())
	}
	for _, x := range p.ExcludeIPs {
		exc = append(exc, x.String())
	}
	return &access.Policy{
		ID: p.ID, DisplayName: p.DisplayName, State: access.PolicyState(p.State),
		Users: access.UserAssignment{All: p.Users.All, IncludeUsers: p.Users.IncludeUsers, IncludeGroups: p.Users.IncludeGroups,
			ExcludeUsers: p.Users.ExcludeUsers, ExcludeGroups: p.Users.ExcludeGroups},
		Applications: access.ApplicationAssignment{All: p.Apps.All, Include: p.Apps.Include, Exclude: p.Apps.Exclude},
		Conditions: access.Conditions{IncludePlatforms: conv[access.Platform](p.Platforms.Include), ExcludePlatforms: conv[access.Platform](p.Platforms.Exclude),
			IncludeIPRanges: inc, ExcludeIPRanges: exc, ClientAppTypes: conv[access.ClientAppType](p.ClientApps)},
		Grant: access.GrantControls{Block: p.Block, Require: conv[access.GrantControl](p.Require), Operator: access.GrantOperator(p.Operator)},
	}
}

func domainDevice(e pe.DeviceEntry) *access.DeviceCompliance {
	return &access.DeviceCompliance{DeviceID: e.ID, State: access.ComplianceState(e.State.State), Risk: access.RiskLevel(e.State.Risk),
		Platform: access.Platform(e.State.Platform), RiskAlertIDs: e.State.AlertIDs, Revision: e.State.Revision, Reason: e.State.Reason}
}

// loadWorkload stores a W1-shaped workload through the service's own paths
// (ImportDirectory, the store, a compliance resync) and starts a fresh service
// on it, returning the service and how long the start took.
func loadWorkload(tb testing.TB, w *w1gen.Workload) (*accesscore.Service, time.Duration) {
	tb.Helper()
	ctx := context.Background()
	st, err := accessstore.Open(ctx, accessstore.Options{Path: filepath.Join(tb.TempDir(), "access.db"), Synchronous: "NORMAL"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	svc, err := accesscore.New(ctx, accesscore.Config{Store: st})
	if err != nil {
		tb.Fatal(err)
	}
	t0 := time.Now()
	if _, err := svc.ImportDirectory(ctx, domainDirectory(w.Directory)); err != nil {
		tb.Fatal(err)
	}
	tb.Logf("imported %d users, %d groups, %d applications in %v", len(w.Directory.Users), len(w.Directory.Groups), len(w.Directory.Applications), time.Since(t0).Round(time.Millisecond))
	for i := range w.Policies {
		if err := st.CreatePolicy(ctx, domainPolicy(&w.Policies[i])); err != nil {
			tb.Fatal(err)
		}
	}
	devs := make([]*access.DeviceCompliance, len(w.Devices))
	for i, e := range w.Devices {
		devs[i] = domainDevice(e)
	}
	if err := st.ReplaceDevices(ctx, devs, 1, nil); err != nil {
		tb.Fatal(err)
	}
	t0 = time.Now()
	svc, err = accesscore.New(ctx, accesscore.Config{Store: st})
	if err != nil {
		tb.Fatal(err)
	}
	return svc, time.Since(t0)
}

// TestMatchesEngineOnW1Small: the service, loaded from its store after an
// import, decides exactly as the engine compiled straight from the generated
// workload (so conversion and storage lose nothing).
func TestMatchesEngineOnW1Small(t *testing.T) {
	w := w1gen.Generate(w1gen.Seed, w1gen.Small)
	svc, took := loadWorkload(t, w)
	t.Logf("service start (load + compile) took %v", took)
	// A live feed: the stored states are confirmed.
	svc.NewFeedConsumer(nil, nil)
	devs := make([]*access.DeviceCompliance, len(w.Devices))
	for i, e := range w.Devices {
		devs[i] = domainDevice(e)
	}
	if err := svc.Resync(context.Background(), devs, 1); err != nil {
		t.Fatal(err)
	}
	ref, err := pe.Compile(w.Directory, w.Policies)
	if err != nil {
		t.Fatal(err)
	}
	idx := pe.NewDeviceIndex()
	idx.PutMany(w.Devices)
	var got, want pe.Result
	for i, req := range w.Requests {
		svc.Evaluate(&req, &got)
		dev, _ := idx.Get(req.DeviceID)
		ref.Evaluate(&req, dev, pe.Feed{}, &want)
		if got.Decision != want.Decision || !slices.Equal(codes(&got), codes(&want)) || !slices.Equal(kinds(&got), kinds(&want)) {
			t.Fatalf("request %d %+v: service %v %v %v, engine %v %v %v", i, req, got.Decision, codes(&got), kinds(&got), want.Decision, codes(&want), kinds(&want))
		}
	}
}

func codes(r *pe.Result) []string {
	var out []string
	for _, x := range r.Reasons {
		out = append(out, x.Code+"/"+x.PolicyID)
	}
	return out
}

func kinds(r *pe.Result) []string {
	var out []string
	for _, p := range r.Policies {
		out = append(out, fmt.Sprintf("%s:%d", p.PolicyID, p.Kind))
	}
	return out
}

// BenchmarkW1Load loads the full W1 workload (100k users, 10k policies, 1M
// devices) through the service and reports the start-up time and heap; set
// CONDACCESS_W1=1 (it takes minutes and a few GB).
func BenchmarkW1Load(b *testing.B) {
	if os.Getenv("CONDACCESS_W1") == "" {
		b.Skip("set CONDACCESS_W1=1 to load the full W1 workload")
	}
	w := w1gen.Generate(w1gen.Seed, w1gen.W1)
	for b.Loop() {
		svc, took := loadWorkload(b, w)
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		b.ReportMetric(took.Seconds(), "start-s")
		b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "heap-MiB")
		_ = svc
	}
}
