package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// StateFile is the agent's state file in the quarantine folder.
const StateFile = "condaccess-agent-state.json"

// maxCompleted bounds the remembered completed actions (oldest are forgotten).
const maxCompleted = 10000

// completed is the stored result of an executed action.
type completed struct {
	Succeeded    bool      `json:"succeeded"`
	Message      string    `json:"message"`
	QuarantineID string    `json:"quarantine_id,omitempty"`
	Findings     []finding `json:"findings,omitempty"`
	Time         time.Time `json:"time"`
}

type finding struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// detection is a detected file and its alert.
type detection struct {
	AlertID   string    `json:"alert_id"`
	Path      string    `json:"path"`
	SHA256    string    `json:"sha256"`
	Size      int64     `json:"size"`
	Reason    string    `json:"reason"`
	EICAR     bool      `json:"eicar,omitempty"`
	FirstSeen time.Time `json:"first_seen"`
	Reported  bool      `json:"reported"`
}

type state struct {
	Completed  map[string]*completed `json:"completed"`
	Detections map[string]*detection `json:"detections"` // by fileKey
	Trusted    map[string]time.Time  `json:"trusted"`    // fileKey of files restored by an administrator
}

func fileKey(path, sha string) string { return sha + "|" + path }

func loadState(dir string) (*state, error) {
	st := &state{Completed: map[string]*completed{}, Detections: map[string]*detection{}, Trusted: map[string]time.Time{}}
	data, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, st); err != nil {
		return nil, fmt.Errorf("agent state %s: %w", filepath.Join(dir, StateFile), err)
	}
	if st.Completed == nil {
		st.Completed = map[string]*completed{}
	}
	if st.Detections == nil {
		st.Detections = map[string]*detection{}
	}
	if st.Trusted == nil {
		st.Trusted = map[string]time.Time{}
	}
	return st, nil
}

// save writes the state atomically (temp file, fsync, rename).
func (st *state) save(dir string) error {
	if len(st.Completed) > maxCompleted {
		ids := make([]string, 0, len(st.Completed))
		for id := range st.Completed {
			ids = append(ids, id)
		}
		sort.Slice(ids, func(i, j int) bool { return st.Completed[ids[i]].Time.Before(st.Completed[ids[j]].Time) })
		for _, id := range ids[:len(ids)-maxCompleted] {
			delete(st.Completed, id)
		}
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, StateFile), data, 0o600)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
