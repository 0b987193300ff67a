package policyengine

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
)

// versionSeq numbers snapshots compiled without WithVersion.
var versionSeq atomic.Int64

// CompileOption tunes Compile.
type CompileOption func(*compileOptions)

type compileOptions struct {
	version int64
}

// WithVersion sets the snapshot's version (e.g. the store revision the directory and the
// policies reflect). Without it, a snapshot gets the next value of a process-wide counter.
func WithVersion(v int64) CompileOption {
	return func(o *compileOptions) { o.version = v }
}

// span is a slice of an arena.
type span struct{ off, n uint32 }

func (sp span) of(a []int32) []int32 { return a[sp.off : sp.off+sp.n] }

// cuser is a compiled user.
type cuser struct {
	gmask     uint64 // Bloom filter of the transitive groups (bit g%64)
	groups    span   // transitive groups, sorted, in dirIndex.userGroups
	disabled  bool
	emergency bool
	external  bool  // has an ExternalID
	ninline   uint8 // when groups.n <= userInline, the groups are also in inline
	inline    [userInline]int32
}

const userInline = 5

// groupList returns the user's transitive groups.
func (d *dirIndex) groupList(u *cuser) []int32 {
	if u.groups.n <= userInline {
		return u.inline[:u.ninline]
	}
	return u.groups.of(d.userGroups)
}

// dirIndex is the compiled, immutable directory shared by snapshots.
type dirIndex struct {
	userIdx    map[string]int32
	userTab    *userTable // userIdx and users for the decision path
	userIDs    []string
	users      []cuser
	userGroups []int32
	groupIdx   map[string]int32
	groupIDs   []string
	groupAnc   [][]int32 // a group's enclosing groups with itself (nil: itself only)
	extIdx     map[string]int32
	groupWords int
	appIdx     map[string]int32
	appIDs     []string
	emergency  []int32
}

// ipCond holds a policy's location condition.
type ipCond struct {
	include, exclude []netip.Prefix
}

// cpol is a compiled policy: the hot fields the decision loop reads.
type cpol struct {
	state      State
	block      bool
	or         bool
	allUsers   bool
	allApps    bool
	req        Controls
	platInc    uint8 // bit per platform; 0 = any
	platExc    uint8
	clientInc  uint8 // bit per client app; 0 = any
	ips        int32 // index into Snapshot.ipConds; -1 = none
	inclUsers  span
	exclUsers  span
	inclGroups span
	exclGroups span // exclMsgs has the not-applied message at the same arena index
	inclApps   span
	exclApps   span
}

const recInline = 15 // makes a crec 64 bytes; an hrec is 64 bytes too

// hrec flags.
const (
	fBlock    = 1 << iota
	fOr       // operator OR
	fAllUsers // all users
	fBig      // the user lists do not fit in crec.ids: use the cpol spans
)

// hrec is a policy's hot record (Snapshot.recs, by policy index): one cache line with
// what a decision reads for a candidate policy.
type hrec struct {
	// egmask and eumask are one-word Bloom filters of the exclude groups (bit g%64) and the
	// exclude users (bit u%64): when neither meets the user's, the user is not excluded.
	egmask    uint64
	eumask    uint64
	id, name  string
	pi        int32
	ips       int32
	state     State
	flags     uint8
	req       Controls
	platInc   uint8
	platExc   uint8
	clientInc uint8
	nIU       uint8
	nIG       uint8
}

// crec is the cold part of a policy record (Snapshot.cold, by policy index): the user and
// group lists, read only when the exclusion Bloom filters do not clear the user (and by
// the Request.AllPolicies path).
type crec struct {
	nEU uint8
	nEG uint8
	ids [recInline]int32 // include users, include groups, exclude users, exclude groups
}

// pstr holds a policy's static strings, built at compile time.
type pstr struct {
	id, name         string
	label            string // display name, or id when it has none
	msgBlock         string
	msgCompliant     string
	msgStale         string
	msgUnknownDevice string
	msgMFA           string
	msgRegistered    string
	msgIPUnknown     string
}

// Snapshot is an immutable compiled directory and policy set.
type Snapshot struct {
	version int64
	// needRegistered: a policy requires REGISTERED_DEVICE (decisions read the device's users).
	needRegistered bool
	dir            *dirIndex

	src      []Policy // sorted by ID, as given (for WithDrafts)
	pols     []cpol
	strs     []pstr
	arena    []int32
	exclMsgs []string // parallel to arena; set for exclude-group entries
	ipConds  []ipCond

	recs   []hrec  // per policy
	cold   []crec  // per policy
	active []int32 // non-disabled policies, sorted (for Request.AllPolicies)

	// Per application (appSpan): every non-disabled policy that targets it (names it or
	// targets all applications), in policy order; an index in that list is a position.
	appSpan []span
	tmpl    []PolicyResult // per position: its NOT_APPLIED result ("application excluded" or "user not included"); nil when too large
	ptmpl   []PolicyResult // per policy: its "user not included" result (when tmpl is nil)
	appPis  []int32        // per position: the policy index, ^index when the policy excludes the application
	// The candidate index: which positions of an application can apply to a user.
	always     []span   // per application: positions of the all-users policies that do not exclude it (in pos)
	keys       keyTable // (app, group), (app, user) → positions in pos; (user) → all-apps indexes in pos
	allByGroup []span   // per group: indexes in allPis of the all-apps policies including it (in pos)
	allPis     []int32  // the non-disabled policies targeting all applications
	allPos     []int32  // per application × allPis: the policy's position in the application's list, -1 when excluded
	allUsers   []uint64 // bitset of the users some all-apps policy includes directly
	// Exact prefilters of keys: per application, a bitset of the groups (groupWords words,
	// nil when too large) and a 512-bit Bloom filter of the users that have a key.
	appGroups []uint64
	appUsers  []uint64
	pos       []int32 // arena of the candidate index
}

// Candidate index keys.
func keyAppGroup(a, g int32) uint64 { return uint64(a)<<32 | uint64(uint32(g)) }
func keyAppUser(a, u int32) uint64  { return 1<<63 | uint64(a)<<32 | uint64(uint32(u)) }
func keyAllUser(u int32) uint64     { return 1<<62 | uint64(uint32(u)) }

// userBloomBit is u's bit in an application's 512-bit user filter.
func userBloomBit(u int32) uint32 { return uint32(u) * 0x9E3779B1 >> 23 }

// maxAppGroupWords bounds the per-application group bitsets (applications × groups / 64).
const maxAppGroupWords = 1 << 22

// maxTemplate bounds the per-application NOT_APPLIED templates (positions over every
// application: 56 bytes each); past it a decision builds its NOT_APPLIED results from the
// per-policy templates. A variable for tests.
var maxTemplate = 1 << 22

// keyTable is an immutable open-addressing hash table from a uint64 key to a span.
type keyTable struct {
	shift uint8
	mask  uint64
	slots []kslot
}

type kslot struct {
	key uint64
	sp  span // n == 0: empty
}

func newKeyTable(n int) keyTable {
	size, b := 16, 4
	for size < 2*n {
		size, b = size*2, b+1
	}
	return keyTable{shift: uint8(64 - b), mask: uint64(size - 1), slots: make([]kslot, size)}
}

func (t *keyTable) put(key uint64, sp span) {
	for j := (key * 0x9E3779B97F4A7C15) >> t.shift; ; j = (j + 1) & t.mask {
		if sl := &t.slots[j]; sl.sp.n == 0 {
			sl.key, sl.sp = key, sp
			return
		}
	}
}

// get returns key's span (empty when absent).
func (t *keyTable) get(key uint64) span {
	for j := (key * 0x9E3779B97F4A7C15) >> t.shift; ; j = (j + 1) & t.mask {
		sl := &t.slots[j]
		if sl.sp.n == 0 || sl.key == key {
			return sl.sp
		}
	}
}

// Version is the snapshot's version.
func (s *Snapshot) Version() int64 { return s.version }

// NumPolicies is the number of policies in the snapshot (all states).
func (s *Snapshot) NumPolicies() int { return len(s.src) }

// Policies returns the snapshot's policies sorted by ID (shared: do not modify).
func (s *Snapshot) Policies() []Policy { return s.src }

// HasUser reports whether the user is in the directory.
func (s *Snapshot) HasUser(id string) bool { _, ok := s.dir.userIdx[id]; return ok }

// HasApplication reports whether the application is in the directory.
func (s *Snapshot) HasApplication(id string) bool { _, ok := s.dir.appIdx[id]; return ok }

// HasGroup reports whether the group is in the directory.
func (s *Snapshot) HasGroup(id string) bool { _, ok := s.dir.groupIdx[id]; return ok }

// TransitiveGroups returns the groups the user is in, directly or through nesting, sorted
// by id; ok is false for an unknown user.
func (s *Snapshot) TransitiveGroups(userID string) (groups []string, ok bool) {
	u, ok := s.dir.userIdx[userID]
	if !ok {
		return nil, false
	}
	gs := s.dir.users[u].groups.of(s.dir.userGroups)
	out := make([]string, len(gs))
	for i, g := range gs {
		out[i] = s.dir.groupIDs[g]
	}
	slices.Sort(out)
	return out, true
}

// ResolveTokenUser returns the directory user a verified token's user claim names:
// the user whose ExternalID is claim; else the user whose ID is claim, provided that
// user has no ExternalID (a user bound to an identity-provider id is reached only
// through it, so a token whose claim merely equals its user id does not). ok is false
// when no user matches.
func (s *Snapshot) ResolveTokenUser(claim string) (userID string, ok bool) {
	if claim == "" {
		return "", false
	}
	if u, ok := s.dir.extIdx[claim]; ok {
		return s.dir.userIDs[u], true
	}
	if u, ok := s.dir.userIdx[claim]; ok && !s.dir.users[u].external {
		return claim, true
	}
	return "", false
}

// EmergencyAccess reports whether userID is a directory user marked EmergencyAccess.
func (s *Snapshot) EmergencyAccess(userID string) bool {
	u, ok := s.dir.userIdx[userID]
	return ok && s.dir.users[u].emergency
}

// DirectoryGroups returns the ids of gs that are directory groups, in order
// (nil when none).
func (s *Snapshot) DirectoryGroups(gs []string) []string {
	var out []string
	for _, g := range gs {
		if _, ok := s.dir.groupIdx[g]; ok {
			out = append(out, g)
		}
	}
	return out
}

// EmergencyAccessUsers returns the ids of the emergency-access users, sorted.
func (s *Snapshot) EmergencyAccessUsers() []string {
	out := make([]string, len(s.dir.emergency))
	for i, u := range s.dir.emergency {
		out[i] = s.dir.userIDs[u]
	}
	slices.Sort(out)
	return out
}

// Compile compiles a directory and policies into a Snapshot. It fails (wrapping
// ErrInvalidDirectory or ErrInvalidPolicy) on empty or duplicate ids and invalid policies;
// references to users, groups and applications that are not in the directory are allowed
// and never match.
func Compile(dir *Directory, policies []Policy, opts ...CompileOption) (*Snapshot, error) {
	if dir == nil {
		dir = &Directory{}
	}
	d, err := compileDirectory(dir)
	if err != nil {
		return nil, err
	}
	return compilePolicies(d, policies, opts)
}

// WithPolicies compiles another policy set against the same directory (cheaper than Compile
// when only policies changed).
func (s *Snapshot) WithPolicies(policies []Policy, opts ...CompileOption) (*Snapshot, error) {
	return compilePolicies(s.dir, policies, opts)
}

// WithDrafts returns a snapshot with the draft policies added, a draft replacing the saved
// policy with the same ID; it keeps s's version. For WhatIf; it allocates.
func (s *Snapshot) WithDrafts(drafts []Policy) (*Snapshot, error) {
	byID := make(map[string]int, len(drafts))
	for i, d := range drafts {
		if _, dup := byID[d.ID]; dup {
			return nil, &PolicyError{PolicyID: d.ID, Field: "policy_id", Msg: "duplicate draft policy id"}
		}
		byID[d.ID] = i
	}
	merged := make([]Policy, 0, len(s.src)+len(drafts))
	for _, p := range s.src {
		if _, replaced := byID[p.ID]; !replaced {
			merged = append(merged, p)
		}
	}
	merged = append(merged, drafts...)
	return compilePolicies(s.dir, merged, []CompileOption{WithVersion(s.version)})
}

func compileDirectory(dir *Directory) (*dirIndex, error) {
	d := &dirIndex{
		userIdx:  make(map[string]int32, len(dir.Users)),
		userIDs:  make([]string, len(dir.Users)),
		users:    make([]cuser, len(dir.Users)),
		groupIdx: make(map[string]int32, len(dir.Groups)),
		groupIDs: make([]string, len(dir.Groups)),
		appIdx:   make(map[string]int32, len(dir.Applications)),
		appIDs:   make([]string, len(dir.Applications)),
	}
	for i, u := range dir.Users {
		if u.ID == "" {
			return nil, fmt.Errorf("%w: user %d has an empty id", ErrInvalidDirectory, i)
		}
		if _, dup := d.userIdx[u.ID]; dup {
			return nil, fmt.Errorf("%w: duplicate user %q", ErrInvalidDirectory, u.ID)
		}
		d.userIdx[u.ID] = int32(i)
		d.userIDs[i] = u.ID
		if u.ExternalID != "" {
			if d.extIdx == nil {
				d.extIdx = map[string]int32{}
			}
			if _, dup := d.extIdx[u.ExternalID]; dup {
				return nil, fmt.Errorf("%w: duplicate external id %q", ErrInvalidDirectory, u.ExternalID)
			}
			d.extIdx[u.ExternalID] = int32(i)
		}
		d.users[i].disabled = u.Disabled
		d.users[i].emergency = u.EmergencyAccess
		d.users[i].external = u.ExternalID != ""
		if u.EmergencyAccess {
			d.emergency = append(d.emergency, int32(i))
		}
	}
	for i, g := range dir.Groups {
		if g.ID == "" {
			return nil, fmt.Errorf("%w: group %d has an empty id", ErrInvalidDirectory, i)
		}
		if _, dup := d.groupIdx[g.ID]; dup {
			return nil, fmt.Errorf("%w: duplicate group %q", ErrInvalidDirectory, g.ID)
		}
		d.groupIdx[g.ID] = int32(i)
		d.groupIDs[i] = g.ID
	}
	d.groupWords = (len(dir.Groups) + 63) / 64
	for i, a := range dir.Applications {
		if a.ID == "" {
			return nil, fmt.Errorf("%w: application %d has an empty id", ErrInvalidDirectory, i)
		}
		if _, dup := d.appIdx[a.ID]; dup {
			return nil, fmt.Errorf("%w: duplicate application %q", ErrInvalidDirectory, a.ID)
		}
		d.appIdx[a.ID] = int32(i)
		d.appIDs[i] = a.ID
	}

	// parents[g]: the groups g is directly nested in; direct[u]: u's direct groups.
	nG := len(dir.Groups)
	parents := make([][]int32, nG)
	direct := make([][]int32, len(dir.Users))
	for gi, g := range dir.Groups {
		for _, m := range g.MemberGroups {
			if c, ok := d.groupIdx[m]; ok && c != int32(gi) {
				parents[c] = append(parents[c], int32(gi))
			}
		}
		for _, m := range g.MemberUsers {
			if u, ok := d.userIdx[m]; ok {
				direct[u] = append(direct[u], int32(gi))
			}
		}
	}
	// ancestors[g]: g and every group containing it, transitively (BFS; cycles tolerated).
	ancestors := make([][]int32, nG)
	mark := make([]int32, nG) // stamp = g+1
	var queue []int32
	for g := range nG {
		if len(parents[g]) == 0 {
			continue // ancestors = {g}, handled below without allocation
		}
		stamp := int32(g + 1)
		queue = append(queue[:0], int32(g))
		mark[g] = stamp
		for h := 0; h < len(queue); h++ {
			for _, p := range parents[queue[h]] {
				if mark[p] != stamp {
					mark[p] = stamp
					queue = append(queue, p)
				}
			}
		}
		ancestors[g] = slices.Clone(queue)
	}
	d.groupAnc = ancestors
	for i := range mark {
		mark[i] = 0
	}
	d.userGroups = make([]int32, 0, len(dir.Users)*3)
	for u := range dir.Users {
		start := len(d.userGroups)
		stamp := int32(u + 1)
		add := func(g int32) {
			if mark[g] != stamp {
				mark[g] = stamp
				d.userGroups = append(d.userGroups, g)
			}
		}
		for _, g := range direct[u] {
			if ancestors[g] == nil {
				add(g)
				continue
			}
			for _, a := range ancestors[g] {
				add(a)
			}
		}
		slices.Sort(d.userGroups[start:])
		cu := &d.users[u]
		cu.groups = span{uint32(start), uint32(len(d.userGroups) - start)}
		for _, g := range d.userGroups[start:] {
			cu.gmask |= 1 << (g & 63)
		}
		if cu.groups.n <= userInline {
			cu.ninline = uint8(copy(cu.inline[:], d.userGroups[start:]))
		}
	}
	// mark uses stamps u+1; reset is not needed afterwards.
	d.userTab = newUserTable(d.userIDs, d.users)
	return d, nil
}

// ValidatePolicy checks the rules a policy must meet to be compiled: a non-empty ID, a state,
// either Block or at least one required control (not both), known enum values and valid IP
// prefixes. The error is a *PolicyError wrapping ErrInvalidPolicy.
func ValidatePolicy(p *Policy) error {
	bad := func(field, msg string) error { return &PolicyError{PolicyID: p.ID, Field: field, Msg: msg} }
	if p.ID == "" {
		return bad("policy_id", "must not be empty")
	}
	if p.State < StateEnabled || p.State > StateDisabled {
		return bad("state", "must be ENABLED, REPORT_ONLY or DISABLED")
	}
	if p.Block && len(p.Require) > 0 {
		return bad("grant_controls", "must either block or require at least one control, not both")
	}
	if !p.Block && len(p.Require) == 0 {
		return bad("grant_controls", "must either block or require at least one control")
	}
	var seen Controls
	for _, c := range p.Require {
		if c != ControlCompliantDevice && c != ControlMFA && c != ControlRegisteredDevice {
			return bad("grant_controls.require", fmt.Sprintf("unknown control %d", c))
		}
		if seen.Has(c) {
			return bad("grant_controls.require", "duplicate control")
		}
		seen = seen.With(c)
	}
	if p.Operator > OperatorOR {
		return bad("grant_controls.operator", fmt.Sprintf("unknown operator %d", p.Operator))
	}
	for _, pl := range p.Platforms.Include {
		if pl < PlatformWindows || pl > PlatformAndroid {
			return bad("conditions.platforms.include", fmt.Sprintf("unknown platform %d", pl))
		}
	}
	for _, pl := range p.Platforms.Exclude {
		if pl < PlatformWindows || pl > PlatformAndroid {
			return bad("conditions.platforms.exclude", fmt.Sprintf("unknown platform %d", pl))
		}
	}
	for _, pr := range p.IncludeIPs {
		if !pr.IsValid() {
			return bad("conditions.locations.include_ip_ranges", "invalid prefix")
		}
	}
	for _, pr := range p.ExcludeIPs {
		if !pr.IsValid() {
			return bad("conditions.locations.exclude_ip_ranges", "invalid prefix")
		}
	}
	for _, ca := range p.ClientApps {
		if ca < ClientAppBrowser || ca > ClientAppOther {
			return bad("conditions.client_app_types.include", fmt.Sprintf("unknown client app type %d", ca))
		}
	}
	return nil
}

func compilePolicies(d *dirIndex, policies []Policy, opts []CompileOption) (*Snapshot, error) {
	var o compileOptions
	for _, f := range opts {
		f(&o)
	}
	if o.version == 0 {
		o.version = versionSeq.Add(1)
	}
	src := slices.Clone(policies)
	slices.SortFunc(src, func(a, b Policy) int { return cmp.Compare(a.ID, b.ID) })
	for i := range src {
		if err := ValidatePolicy(&src[i]); err != nil {
			return nil, err
		}
		if i > 0 && src[i].ID == src[i-1].ID {
			return nil, &PolicyError{PolicyID: src[i].ID, Field: "policy_id", Msg: "duplicate policy id"}
		}
	}
	s := &Snapshot{
		version: o.version,
		dir:     d,
		src:     src,
		pols:    make([]cpol, len(src)),
		recs:    make([]hrec, len(src)),
		cold:    make([]crec, len(src)),
		strs:    make([]pstr, len(src)),
	}
	appendIDs := func(ids []string, idx map[string]int32) span {
		start := len(s.arena)
		for _, id := range ids {
			if v, ok := idx[id]; ok && !slices.Contains(s.arena[start:], v) {
				s.arena = append(s.arena, v)
				s.exclMsgs = append(s.exclMsgs, "")
			}
		}
		return span{uint32(start), uint32(len(s.arena) - start)}
	}
	nApps := len(d.appIDs)
	specLists := make([][]int32, nApps) // policy index, ^index when the policy also excludes the app
	exclAllLists := make([][]int32, nApps)
	for i := range src {
		p := &src[i]
		c := &s.pols[i]
		c.state = p.State
		c.block = p.Block
		c.or = p.Operator == OperatorOR
		c.allUsers = p.Users.All
		c.allApps = p.Apps.All
		for _, r := range p.Require {
			c.req = c.req.With(r)
		}
		if c.req.Has(ControlRegisteredDevice) && p.State != StateDisabled {
			s.needRegistered = true
		}
		for _, pl := range p.Platforms.Include {
			c.platInc |= 1 << pl
		}
		for _, pl := range p.Platforms.Exclude {
			c.platExc |= 1 << pl
		}
		for _, ca := range p.ClientApps {
			c.clientInc |= 1 << ca
		}
		c.ips = -1
		if len(p.IncludeIPs) > 0 || len(p.ExcludeIPs) > 0 {
			c.ips = int32(len(s.ipConds))
			s.ipConds = append(s.ipConds, ipCond{include: maskAll(p.IncludeIPs), exclude: maskAll(p.ExcludeIPs)})
		}
		c.inclUsers = appendIDs(p.Users.IncludeUsers, d.userIdx)
		c.exclUsers = appendIDs(p.Users.ExcludeUsers, d.userIdx)
		c.inclGroups = appendIDs(p.Users.IncludeGroups, d.groupIdx)
		c.exclGroups = appendIDs(p.Users.ExcludeGroups, d.groupIdx)
		for k := c.exclGroups.off; k < c.exclGroups.off+c.exclGroups.n; k++ {
			s.exclMsgs[k] = NotAppliedUserExcludedByGr + d.groupIDs[s.arena[k]]
		}
		c.inclApps = appendIDs(p.Apps.Include, d.appIdx)
		c.exclApps = appendIDs(p.Apps.Exclude, d.appIdx)

		name := p.DisplayName
		if name == "" {
			name = p.ID
		}
		q := fmt.Sprintf("%q", name)
		s.strs[i] = pstr{
			id:               p.ID,
			name:             p.DisplayName,
			label:            name,
			msgBlock:         "policy " + q + " blocks access",
			msgCompliant:     "policy " + q + " requires a compliant device; the device is not compliant",
			msgStale:         "policy " + q + " requires a compliant device; the compliance feed is stale, so compliance cannot be confirmed (fail closed)",
			msgUnknownDevice: "policy " + q + " requires a compliant device; the device is unknown to the compliance feed",
			msgMFA:           "policy " + q + " requires multi-factor authentication",
			msgRegistered:    "policy " + q + " requires a device registered to the user; the device is not the user's",
			msgIPUnknown:     "policy " + q + " has a location condition and the client IP is unknown (fail closed)",
		}
		s.recs[i] = s.record(int32(i), c)
		if p.State == StateDisabled {
			continue
		}
		s.active = append(s.active, int32(i))
		if p.Apps.All {
			s.allPis = append(s.allPis, int32(i))
			for _, a := range c.exclApps.of(s.arena) {
				exclAllLists[a] = append(exclAllLists[a], int32(i))
			}
			continue
		}
		excl := c.exclApps.of(s.arena)
		for _, a := range c.inclApps.of(s.arena) {
			v := int32(i)
			if slices.Contains(excl, a) {
				v = ^v
			}
			specLists[a] = append(specLists[a], v)
		}
	}
	s.buildIndex(nApps, len(d.groupIDs), len(d.userIDs), specLists, exclAllLists)
	return s, nil
}

// buildIndex builds the per-application lists and the candidate index. specLists[a] holds
// the policies naming application a in ascending order (^index when the policy also
// excludes a); exclAllLists[a] the all-applications policies excluding a.
func (s *Snapshot) buildIndex(nApps, nGroups, nUsers int, specLists, exclAllLists [][]int32) {
	nAll := len(s.allPis)
	gw := (nGroups + 63) / 64
	if nApps*gw <= maxAppGroupWords {
		s.appGroups = make([]uint64, nApps*gw)
	}
	s.appUsers = make([]uint64, nApps*8)
	s.allUsers = make([]uint64, (nUsers+63)/64)
	total := nApps * nAll
	for a := range nApps {
		total += len(specLists[a])
	}
	s.appSpan = make([]span, nApps)
	s.always = make([]span, nApps)
	if total <= maxTemplate {
		s.tmpl = make([]PolicyResult, 0, total)
	}
	s.ptmpl = make([]PolicyResult, len(s.pols))
	for pi := range s.pols {
		st := &s.strs[pi]
		pr := &s.ptmpl[pi]
		*pr = PolicyResult{PolicyID: st.id, DisplayName: st.name, State: s.pols[pi].state, Kind: ResultNotApplied,
			NotApplied: NotAppliedUserNotIncluded, idx: int32(pi)}
		if pr.State != StateEnabled {
			pr.Kind = ResultReportOnlyNotApplied
		}
	}
	s.appPis = make([]int32, 0, total)
	s.allPos = make([]int32, nApps*nAll)
	type pair struct {
		key uint64
		v   int32
	}
	var pairs []pair
	var alw []int32
	for a := range nApps {
		start := len(s.appPis)
		spec, excl := specLists[a], exclAllLists[a]
		alw = alw[:0]
		i, j := 0, 0
		for i < len(spec) || j < nAll {
			p := int32(len(s.appPis) - start)
			var pi int32
			excluded, all := false, false
			if v := int32(0); i < len(spec) {
				v = spec[i]
				if v < 0 {
					v = ^v
				}
				if j >= nAll || v < s.allPis[j] {
					pi, excluded = v, spec[i] < 0
					i++
				} else {
					all = true
				}
			} else {
				all = true
			}
			if all {
				pi = s.allPis[j]
				excluded = slices.Contains(excl, pi)
				s.allPos[a*nAll+j] = p
				if excluded {
					s.allPos[a*nAll+j] = -1
				}
				j++
			}
			if s.tmpl != nil {
				pr := s.ptmpl[pi]
				if excluded {
					pr.NotApplied = NotAppliedAppExcluded
				}
				s.tmpl = append(s.tmpl, pr)
			}
			if excluded {
				s.appPis = append(s.appPis, ^pi)
			} else {
				s.appPis = append(s.appPis, pi)
			}
			c := &s.pols[pi]
			switch {
			case excluded:
			case c.allUsers:
				alw = append(alw, p)
			case !all:
				for _, g := range c.inclGroups.of(s.arena) {
					pairs = append(pairs, pair{keyAppGroup(int32(a), g), p})
					if s.appGroups != nil {
						s.appGroups[a*gw+int(g>>6)] |= 1 << (g & 63)
					}
				}
				for _, u := range c.inclUsers.of(s.arena) {
					pairs = append(pairs, pair{keyAppUser(int32(a), u), p})
					b := userBloomBit(u)
					s.appUsers[a*8+int(b>>6)] |= 1 << (b & 63)
				}
			}
		}
		s.appSpan[a] = span{uint32(start), uint32(len(s.appPis) - start)}
		s.always[a] = span{uint32(len(s.pos)), uint32(len(alw))}
		s.pos = append(s.pos, alw...)
	}
	byGroup := make([][]int32, nGroups)
	for j, pi := range s.allPis {
		c := &s.pols[pi]
		if c.allUsers {
			continue
		}
		for _, g := range c.inclGroups.of(s.arena) {
			byGroup[g] = append(byGroup[g], int32(j))
		}
		for _, u := range c.inclUsers.of(s.arena) {
			pairs = append(pairs, pair{keyAllUser(u), int32(j)})
			s.allUsers[u>>6] |= 1 << (u & 63)
		}
	}
	s.allByGroup = make([]span, nGroups)
	for g, js := range byGroup {
		s.allByGroup[g] = span{uint32(len(s.pos)), uint32(len(js))}
		s.pos = append(s.pos, js...)
	}
	slices.SortFunc(pairs, func(x, y pair) int {
		if c := cmp.Compare(x.key, y.key); c != 0 {
			return c
		}
		return cmp.Compare(x.v, y.v)
	})
	nKeys := 0
	for k := range pairs {
		if k == 0 || pairs[k].key != pairs[k-1].key {
			nKeys++
		}
	}
	s.keys = newKeyTable(nKeys)
	for k := 0; k < len(pairs); {
		off := len(s.pos)
		key := pairs[k].key
		for ; k < len(pairs) && pairs[k].key == key; k++ {
			s.pos = append(s.pos, pairs[k].v)
		}
		s.keys.put(key, span{uint32(off), uint32(len(s.pos) - off)})
	}
}

// record builds policy pi's hot record.
func (s *Snapshot) record(pi int32, c *cpol) hrec {
	r := hrec{
		id: s.strs[pi].id, name: s.strs[pi].name, pi: pi, ips: c.ips, state: c.state, req: c.req,
		platInc: c.platInc, platExc: c.platExc, clientInc: c.clientInc,
	}
	if c.block {
		r.flags |= fBlock
	}
	if c.or {
		r.flags |= fOr
	}
	if c.allUsers {
		r.flags |= fAllUsers
	}
	for _, u := range c.exclUsers.of(s.arena) {
		r.eumask |= 1 << (u & 63)
	}
	for _, g := range c.exclGroups.of(s.arena) {
		r.egmask |= 1 << (g & 63)
	}
	lists := []span{c.inclUsers, c.inclGroups, c.exclUsers, c.exclGroups}
	n := 0
	for _, l := range lists {
		n += int(l.n)
	}
	if n > recInline {
		r.flags |= fBig
		return r
	}
	cold := &s.cold[pi]
	k := 0
	for _, l := range lists {
		k += copy(cold.ids[k:], l.of(s.arena))
	}
	r.nIU, r.nIG = uint8(c.inclUsers.n), uint8(c.inclGroups.n)
	cold.nEU, cold.nEG = uint8(c.exclUsers.n), uint8(c.exclGroups.n)
	return r
}

func maskAll(ps []netip.Prefix) []netip.Prefix {
	if len(ps) == 0 {
		return nil
	}
	out := make([]netip.Prefix, len(ps))
	for i, p := range ps {
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			out[i] = netip.PrefixFrom(a.Unmap(), p.Bits()-96).Masked()
		} else {
			out[i] = p.Masked()
		}
	}
	return out
}
