package dashboard

import (
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
)

// page holds the page, its script and its style sheet, served as they are: no build step.
//
//go:embed page
var page embed.FS

// routes serves, relative to wherever the dashboard is mounted:
//
//	/               the page, with the latest snapshot in it
//	/snapshot.json  the latest Snapshot
//	/events         server-sent events, one Snapshot (JSON) per refresh, the latest first
//	/app.js, /style.css
func (d *Dashboard) routes() (*http.ServeMux, error) {
	assets, err := fs.Sub(page, "page")
	if err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	tmpl, err := template.ParseFS(assets, "index.html")
	if err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := tmpl.Execute(w, d.Snapshot()); err != nil {
			d.opts.Logger.Warn("dashboard: page", "err", err)
		}
	})
	mux.HandleFunc("GET /snapshot.json", func(w http.ResponseWriter, r *http.Request) {
		b, _ := d.latest()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(b)
	})
	mux.HandleFunc("GET /events", d.serveEvents)
	static := http.FileServerFS(assets)
	mux.Handle("GET /app.js", static)
	mux.Handle("GET /style.css", static)
	return mux, nil
}

// ServeHTTP serves the dashboard's page and its data. Mounted under a path, it needs the path stripped
// (http.StripPrefix): the page refers to its parts relatively.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) { d.mux.ServeHTTP(w, r) }

// serveEvents streams a snapshot at every refresh until the browser goes or the dashboard closes.
func (d *Dashboard) serveEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	for {
		b, fresh := d.latest()
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-fresh:
		case <-r.Context().Done():
			return
		case <-d.ctx.Done():
			return
		}
	}
}
