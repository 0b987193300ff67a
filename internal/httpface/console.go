package httpface

import (
	"bytes"
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// dist is the console's Vite build (web/console, `npm run build`), committed and
// checked up to date by .ci/run.
//
//go:embed all:dist
var dist embed.FS

// Routes are the console's page routes; each serves index.html on a direct load.
var Routes = []string{"/", "/devices", "/alerts", "/actions", "/policies", "/whatif", "/signins", "/events", "/audit", "/blocked"}

// csp allows only the console's own scripts, styles and calls.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Console serves the embedded console: its assets under /assets/, index.html for every
// page route (and /devices/<id>), 404 for anything else.
func Console() http.Handler {
	root, err := fs.Sub(dist, "dist")
	if err != nil {
		panic(err) // the embed pattern guarantees the folder
	}
	index, err := fs.ReadFile(root, "index.html")
	if err != nil {
		index = []byte("<!doctype html><title>condaccess</title><p>The console was not built (web/console: npm ci && npm run build).</p>")
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		p := r.URL.Path
		if isRoute(p) {
			h.Set("Cache-Control", "no-cache")
			http.ServeContent(w, r, "index.html", time.Time{}, bytes.NewReader(index))
			return
		}
		if strings.HasPrefix(p, "/assets/") && !strings.Contains(p, "..") {
			b, err := fs.ReadFile(root, strings.TrimPrefix(path.Clean(p), "/"))
			if err == nil {
				// File names carry Vite's content hash.
				h.Set("Cache-Control", "public, max-age=31536000, immutable")
				http.ServeContent(w, r, path.Base(p), time.Time{}, bytes.NewReader(b))
				return
			}
		}
		http.NotFound(w, r)
	})
}

func isRoute(p string) bool {
	for _, r := range Routes {
		if p == r {
			return true
		}
	}
	id, ok := strings.CutPrefix(p, "/devices/")
	return ok && id != "" && !strings.Contains(id, "/")
}
