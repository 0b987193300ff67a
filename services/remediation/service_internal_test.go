package remediation

import "testing"

func TestStateOf(t *testing.T) {
	a := func(typ ActionType, st ActionState) *Action { return &Action{Type: typ, State: st} }
	q, k, r := ActionQuarantineFile, ActionKillProcess, ActionRestoreFile
	tests := []struct {
		name    string
		actions []*Action
		want    InvestigationState
	}{
		{"no actions", nil, StateNoThreatsFound},
		{"queued", []*Action{a(q, ActionStateQueued), a(k, ActionStatePendingApproval)}, StateRunning},
		{"sent", []*Action{a(q, ActionStateSent)}, StateRunning},
		{"waiting for approval", []*Action{a(q, ActionStateSucceeded), a(k, ActionStatePendingApproval)}, StatePendingApproval},
		{"all succeeded", []*Action{a(q, ActionStateSucceeded), a(k, ActionStateSucceeded)}, StateRemediated},
		{"undone counts as succeeded", []*Action{a(q, ActionStateUndone), a(r, ActionStateFailed)}, StateRemediated},
		{"some succeeded", []*Action{a(q, ActionStateSucceeded), a(k, ActionStateRejected)}, StatePartiallyRemediated},
		{"none succeeded", []*Action{a(q, ActionStateFailed), a(k, ActionStateTimedOut), a(q, ActionStateCancelled)}, StateFailed},
		{"restores do not count", []*Action{a(r, ActionStateQueued)}, StateNoThreatsFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := stateOf(tt.actions); got != tt.want {
				t.Errorf("stateOf = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRestrictiveness(t *testing.T) {
	if !(LevelNone.restrictiveness() > LevelSemi.restrictiveness() && LevelSemi.restrictiveness() > LevelFull.restrictiveness()) {
		t.Error("NONE must be more restrictive than SEMI, SEMI more than FULL")
	}
	if DefaultLevel != LevelFull {
		t.Errorf("default level %v, want FULL (Defender's default for new tenants)", DefaultLevel)
	}
}
