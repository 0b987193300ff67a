package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
)

func init() {
	register("directory", "bulk-import users, groups and applications (access service)", group("directory", map[string]verb{
		"import": {"import a directory: directory import --w1-scale small|full, or -f FILE (protojson ImportDirectoryRequest)", directoryImport},
	}))
}

// w1Scales are the sizes of the W1 directory (BENCHMARK.md): full is the benchmark's
// 100,000 users in 1,000 groups with 1,000 applications; small is a hundredth of it.
var w1Scales = map[string]struct{ users, groups, apps int }{
	"small": {1000, 100, 100},
	"full":  {100000, 1000, 1000},
}

// w1Directory generates the W1 directory with a fixed seed: every user is a member of
// 1–5 groups picked uniformly at random.
func w1Directory(users, groups, apps int) *accessv1.ImportDirectoryRequest {
	r := rand.New(rand.NewPCG(1, 2))
	d := &accessv1.ImportDirectoryRequest{}
	gs := make([]*accessv1.Group, groups)
	for i := range gs {
		gs[i] = &accessv1.Group{GroupId: fmt.Sprintf("g-%d", i), DisplayName: fmt.Sprintf("Group %d", i)}
	}
	for i := 0; i < users; i++ {
		id := fmt.Sprintf("u-%d", i)
		d.Users = append(d.Users, &accessv1.User{UserId: id, DisplayName: fmt.Sprintf("User %d", i)})
		n := 1 + r.IntN(5)
		seen := map[int]bool{}
		for len(seen) < n && len(seen) < groups {
			g := r.IntN(groups)
			if seen[g] {
				continue
			}
			seen[g] = true
			gs[g].MemberUserIds = append(gs[g].MemberUserIds, id)
		}
	}
	d.Groups = gs
	for i := 0; i < apps; i++ {
		d.Applications = append(d.Applications, &accessv1.Application{ApplicationId: fmt.Sprintf("app-%d", i), DisplayName: fmt.Sprintf("Application %d", i)})
	}
	return d
}

// importChunks splits a directory into stream messages of at most size items each:
// users first, then groups (whose members then exist), then applications.
func importChunks(d *accessv1.ImportDirectoryRequest, size int) []*accessv1.ImportDirectoryRequest {
	var out []*accessv1.ImportDirectoryRequest
	for i := 0; i < len(d.GetUsers()); i += size {
		out = append(out, &accessv1.ImportDirectoryRequest{Users: d.GetUsers()[i:min(i+size, len(d.GetUsers()))]})
	}
	// A group's member list can be long; count members towards the chunk size too.
	var cur *accessv1.ImportDirectoryRequest
	n := 0
	for _, g := range d.GetGroups() {
		w := 1 + len(g.GetMemberUserIds())/10 + len(g.GetMemberGroupIds())
		if cur == nil || n+w > size*10 || len(cur.Groups) >= size {
			cur = &accessv1.ImportDirectoryRequest{}
			out = append(out, cur)
			n = 0
		}
		cur.Groups = append(cur.Groups, g)
		n += w
	}
	for i := 0; i < len(d.GetApplications()); i += size {
		out = append(out, &accessv1.ImportDirectoryRequest{Applications: d.GetApplications()[i:min(i+size, len(d.GetApplications()))]})
	}
	return out
}

func directoryImport(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error {
	var scale, file string
	var chunk int
	fs.StringVar(&scale, "w1-scale", "", "generate the W1 benchmark directory: small or full")
	fs.StringVar(&file, "f", "", "file with one protojson ImportDirectoryRequest {users, groups, applications}")
	fs.IntVar(&chunk, "chunk", 5000, "items per stream message (at most 10000)")
	return func(ctx context.Context, c *cli, args []string) error {
		if err := needArgs(args, 0, "no argument"); err != nil {
			return err
		}
		if (scale == "") == (file == "") {
			return fmt.Errorf("%w: give exactly one of --w1-scale and -f", errUsage)
		}
		if chunk < 1 || chunk > 10000 {
			return fmt.Errorf("%w: --chunk must be 1..10000", errUsage)
		}
		var d *accessv1.ImportDirectoryRequest
		if scale != "" {
			s, ok := w1Scales[scale]
			if !ok {
				return fmt.Errorf("%w: --w1-scale must be small or full, not %q", errUsage, scale)
			}
			d = w1Directory(s.users, s.groups, s.apps)
		} else {
			data, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			d = &accessv1.ImportDirectoryRequest{}
			if err := protojson.Unmarshal(data, d); err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
		}
		client, err := c.directory()
		if err != nil {
			return err
		}
		chunks := importChunks(d, chunk)
		total := len(d.GetUsers()) + len(d.GetGroups()) + len(d.GetApplications())
		p := newProgress(c.stderr, "importing", total, !c.json())
		start := time.Now()
		stream, err := client.ImportDirectory(ctx)
		if err != nil {
			return err
		}
		sent := 0
		for _, ch := range chunks {
			if err := stream.Send(ch); err != nil {
				// The server ended the stream; CloseAndRecv returns its status.
				break
			}
			sent += len(ch.GetUsers()) + len(ch.GetGroups()) + len(ch.GetApplications())
			p.update(sent)
		}
		p.message("committing")
		resp, err := stream.CloseAndRecv()
		p.done()
		if err != nil {
			return err
		}
		if c.json() {
			return c.printJSON(resp)
		}
		fmt.Fprintf(c.stdout, "imported %d users, %d groups, %d applications in %s (server %s)\n",
			resp.GetUsers(), resp.GetGroups(), resp.GetApplications(), time.Since(start).Round(time.Millisecond), resp.GetDuration().AsDuration().Round(time.Millisecond))
		return nil
	}
}

// progress shows the progress of a long operation on a terminal (one line, redrawn),
// or every 10% elsewhere.
type progress struct {
	w        io.Writer
	label    string
	total    int
	on, tty  bool
	lastTen  int
	lastDraw time.Time
}

func newProgress(w io.Writer, label string, total int, on bool) *progress {
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progress{w: w, label: label, total: total, on: on, tty: tty, lastTen: -1}
}

func (p *progress) update(n int) {
	if !p.on || p.total == 0 {
		return
	}
	pct := n * 100 / p.total
	if p.tty {
		if time.Since(p.lastDraw) < 100*time.Millisecond && n != p.total {
			return
		}
		p.lastDraw = time.Now()
		const width = 30
		bar := make([]byte, width)
		for i := range bar {
			if i < pct*width/100 {
				bar[i] = '#'
			} else {
				bar[i] = '.'
			}
		}
		fmt.Fprintf(p.w, "\r%s [%s] %3d%% %d/%d", p.label, bar, pct, n, p.total)
		return
	}
	if pct/10 != p.lastTen {
		p.lastTen = pct / 10
		fmt.Fprintf(p.w, "%s: %d%% (%d/%d)\n", p.label, pct, n, p.total)
	}
}

func (p *progress) message(m string) {
	if !p.on {
		return
	}
	if p.tty {
		fmt.Fprintf(p.w, "\r%s: %s...%20s", p.label, m, "")
		return
	}
	fmt.Fprintf(p.w, "%s: %s...\n", p.label, m)
}

func (p *progress) done() {
	if p.on && p.tty {
		fmt.Fprintln(p.w)
	}
}
