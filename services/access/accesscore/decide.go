package accesscore

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/condaccess/condaccess/internal/consumer"
	"github.com/condaccess/condaccess/services/access"
	pe "github.com/condaccess/condaccess/services/access/policyengine"
)

// Feed returns the compliance feed's health at now: lock-free (two atomic loads).
func (s *Service) Feed(now time.Time) pe.Feed {
	started := s.feedStarted.Load()
	if started == 0 {
		// No feed running: nothing confirms the stored states.
		return pe.Feed{Stale: true}
	}
	last := max(s.lastContact.Load(), started)
	// The chain is as fresh as its oldest hop: compliance's view of risk may be older
	// than our view of compliance (a stuck or cut-off risk consumer there).
	if ra := s.riskAsOf.Load(); ra != 0 {
		last = min(last, max(ra, started))
	}
	age := time.Duration(now.UnixNano() - last)
	return pe.Feed{Stale: age > s.cfg.StalenessBound, Age: age}
}

// FeedStatus is the compliance feed's health for metrics and health details.
type FeedStatus struct {
	Running  bool
	Stale    bool
	Lag      time.Duration // age of the whole chain: the older of the last contact and risk_as_of
	Bound    time.Duration
	Revision int64
	// RiskAsOf is the compliance service's risk_as_of (zero when unknown).
	RiskAsOf time.Time
	// Consumer is the feed consumer's status (stuck revision and cause included).
	Consumer consumer.Status
}

// FeedStatus reports the feed's health now.
func (s *Service) FeedStatus() FeedStatus {
	f := s.Feed(time.Now())
	fs := FeedStatus{Running: s.feedStarted.Load() != 0, Stale: f.Stale, Lag: f.Age, Bound: s.cfg.StalenessBound, Revision: s.feedRev.Load()}
	if ra := s.riskAsOf.Load(); ra != 0 {
		fs.RiskAsOf = time.Unix(0, ra)
	}
	if c := s.feed.Load(); c != nil {
		fs.Consumer = c.Status()
	}
	return fs
}

// DecideOptions is what a decision knows besides the engine request.
type DecideOptions struct {
	// UserProof and DeviceProof say how the user and the device were proven
	// (recorded with the sign-in).
	UserProof, DeviceProof access.Proof
	// Block, when set, is the decision's only reason: the request is blocked
	// without evaluating the policies (an identity that failed verification).
	Block *pe.Reason
	// TokenSubject, when set, is the verified token's user claim: Decide resolves
	// it to the directory user (Snapshot.ResolveTokenUser, on the snapshot it
	// decides with) into the request's UserID, and blocks with UNKNOWN_USER when it
	// names none. TokenIssuer is the token's issuer (recorded).
	TokenSubject, TokenIssuer string
	// TokenGroups are the verified token's groups (Request.TokenGroups).
	TokenGroups []string
}

// msgTokenUserUnknown is the reason message of a token whose user claim matches no
// directory user.
const msgTokenUserUnknown = "the token's user matches no directory user (by external_id, or by user_id for a user without one)"

// SignInIDSetter is implemented by a decision's wire response that carries
// the sign-in id: Decide sets it before the sign-in is enqueued.
type SignInIDSetter interface{ SetSignInID(id string) }

// Decide evaluates r from memory, opens or refreshes the session of an
// allowed access to a known device, records the sign-in off the decision
// path, and returns what build made of the result (the wire response). It
// never calls another service, never writes to the store and never takes a
// lock a writer holds across a store call.
func (s *Service) Decide(ctx context.Context, r *pe.Request, o DecideOptions, traceID string, build func(res *pe.Result, sessionID, traceID string) any) any {
	res := s.results.Get().(*pe.Result)
	now := time.Now()
	snap := s.snap.Load()
	if o.TokenSubject != "" {
		r.UserID, r.TokenGroups = "", o.TokenGroups
		if uid, ok := snap.ResolveTokenUser(o.TokenSubject); ok {
			r.UserID = uid
			// The lockout guard proves from the directory that no enabled policy
			// can block an emergency-access account; token groups must not
			// undo that.
			if len(r.TokenGroups) > 0 && (snap.EmergencyAccess(uid) || slices.Contains(s.cfg.EmergencyAccounts, uid)) {
				r.TokenGroups = nil
			}
		} else if o.Block == nil {
			o.Block = &pe.Reason{Code: pe.CodeUnknownUser, Message: msgTokenUserUnknown}
		}
	}
	if o.Block != nil {
		res.Reset()
		res.SnapshotVersion = snap.Version()
		res.Decision = pe.DecisionBlock
		res.Reasons = append(res.Reasons, *o.Block)
	} else {
		snap.EvaluateIn(r, s.devices.Load(), s.Feed(now), res)
		s.blockRevoked(r, res)
	}
	sid := ""
	// No side effects for strangers: a session only for an allowed, known user
	// (an ALLOW implies one) on a device the compliance feed knows.
	if res.Decision == pe.DecisionAllow && res.Device.Known {
		l, write := s.sessions.Touch(ctx, r.UserID, r.DeviceID, r.AppID, now)
		sid = l.ID
		if write {
			snap := l.Snapshot()
			s.recorder.Session(&snap)
		}
	}
	out := build(res, sid, traceID)
	var setID func(string)
	if st, ok := out.(SignInIDSetter); ok {
		setID = st.SetSignInID
	}
	s.recorder.SignIn(access.SignIn{Time: now, UserID: r.UserID, DeviceID: r.DeviceID, AppID: r.AppID,
		Decision: access.Decision(res.Decision), TraceID: traceID, UserProof: o.UserProof, DeviceProof: o.DeviceProof}, out, setID)
	s.cfg.Metrics.Decision(res.Decision)
	s.results.Put(res)
	return out
}

// Evaluate evaluates r without side effects (no session, no sign-in).
func (s *Service) Evaluate(r *pe.Request, res *pe.Result) {
	s.snap.Load().EvaluateIn(r, s.devices.Load(), s.Feed(time.Now()), res)
	s.blockRevoked(r, res)
}

// blockRevoked turns the decision for a device whose identity is revoked into BLOCK
// (DEVICE_IDENTITY_REVOKED), whatever the policies said.
func (s *Service) blockRevoked(r *pe.Request, res *pe.Result) {
	if r.DeviceID == "" || s.cfg.Revocations == nil || !s.cfg.Revocations.IsRevoked(r.DeviceID) {
		return
	}
	res.Decision = pe.DecisionBlock
	res.Reasons = append([]pe.Reason{{Code: ReasonDeviceIdentityRevoked,
		Message: "the identity of device " + r.DeviceID + " was revoked; it must enroll again"}}, res.Reasons...)
}

// WhatIf are hypothetical changes.
type WhatIf struct {
	ComplianceState access.ComplianceState // 0 = as is
	Risk            access.RiskLevel       // 0 = as is
	Drafts          []*access.Policy
	MFADone         *bool
}

// MaxRiskForWhatIf is the maximum device risk assumed by a hypothetical risk
// level (the compliance policies' usual "at or under MEDIUM").
const MaxRiskForWhatIf = access.RiskLevel(3)

var riskNames = map[access.RiskLevel]string{0: "UNSPECIFIED", 1: "NONE", 2: "LOW", 3: "MEDIUM", 4: "HIGH"}

// WhatIf evaluates r as is into actual and with the overrides into hypo.
// Drafts are validated (INVALID_ARGUMENT naming overrides.draft_policies[i]).
func (s *Service) WhatIf(r pe.Request, o WhatIf, actual, hypo *pe.Result) error {
	snap := s.snap.Load()
	if len(o.Drafts) > 0 {
		drafts := make([]pe.Policy, len(o.Drafts))
		for i, p := range o.Drafts {
			if err := s.validatePolicy(p, fmt.Sprintf("overrides.draft_policies[%d]", i)); err != nil {
				return err
			}
			drafts[i] = EnginePolicy(p)
		}
		var err error
		if snap, err = snap.WithDrafts(drafts); err != nil {
			return access.Invalid("overrides.draft_policies", "%v", err)
		}
	}
	r.AllPolicies = true
	now := time.Now()
	feed := s.Feed(now)
	dev, _ := s.devices.Load().Get(r.DeviceID)
	s.snap.Load().Evaluate(&r, dev, feed, actual)

	hdev := dev
	if o.ComplianceState != 0 || o.Risk != 0 {
		var d pe.DeviceState
		if dev != nil {
			d = *dev
		}
		if o.Risk != 0 {
			d.Risk = pe.RiskLevel(o.Risk)
			d.AlertIDs = nil
			if o.Risk > MaxRiskForWhatIf {
				d.State = pe.ComplianceNoncompliant
				d.Setting = "what-if/max_device_risk"
				d.Reason = fmt.Sprintf("hypothetical device risk %s is above the maximum %s", riskNames[o.Risk], riskNames[MaxRiskForWhatIf])
			} else {
				d.State = pe.ComplianceCompliant
				d.Setting, d.Reason = "", ""
			}
		}
		if o.ComplianceState != 0 {
			d.State = pe.ComplianceState(o.ComplianceState)
			if !o.ComplianceState.CountsAsCompliant() && d.Reason == "" {
				d.Setting, d.Reason = "what-if/compliance_state", "hypothetical compliance state"
			}
		}
		hdev = &d
	}
	hr := r
	if o.MFADone != nil {
		hr.MFADone = *o.MFADone
	}
	snap.Evaluate(&hr, hdev, feed, hypo)
	return nil
}
