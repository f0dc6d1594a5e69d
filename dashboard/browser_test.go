package dashboard

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/examples/demo"
	"github.com/natsfleet/natsfleet/internal/testutil"
	"github.com/natsfleet/natsfleet/limits"
)

// shown is what the page shows, read from its DOM: the text a person sees, not the snapshot behind it.
type shown struct {
	At     float64 `json:"at"` // of the snapshot drawn last: drawing sets it last, so it stalls if drawing fails
	Stream string  `json:"stream"`
	Agents []struct {
		ID       string `json:"id"`
		Capacity int    `json:"capacity"`
		Free     int    `json:"free"`
		Status   string `json:"status"`
	} `json:"agents"`
	Pools []struct {
		ID      string `json:"id"`
		Calls   int    `json:"calls"`
		Workers []struct {
			ID     string `json:"id"`
			Calls  int    `json:"calls"`
			Health string `json:"health"`
		} `json:"workers"`
	} `json:"pools"`
	Sets []struct {
		Name   string `json:"name"`
		Limits []struct {
			Key         string `json:"key"`
			Capacity    int    `json:"capacity"`
			Utilization string `json:"utilization"`
			Points      int    `json:"points"` // of its chart's line
		} `json:"limits"`
	} `json:"sets"`
}

const readPage = `(() => {
	const text = (root, sel) => root.querySelector(sel).textContent.trim();
	return {
		at: +document.body.dataset.at,
		stream: text(document, "#stream"),
		agents: [...document.querySelectorAll("#agents tr[data-agent]")].map((r) => ({
			id: r.dataset.agent, capacity: +text(r, ".capacity"), free: +text(r, ".free"), status: text(r, ".status")})),
		pools: [...document.querySelectorAll("#pools [data-pool]")].map((p) => ({
			id: p.dataset.pool, calls: +text(p, ".summary .calls"),
			workers: [...p.querySelectorAll("tr[data-worker]")].map((r) => ({
				id: r.dataset.worker, calls: +text(r, ".calls"), health: text(r, ".health")}))})),
		sets: [...document.querySelectorAll("#limits [data-set]")].map((s) => ({
			name: s.dataset.set,
			limits: [...s.querySelectorAll("tr[data-limit]")].map((r) => ({
				key: r.dataset.limit, capacity: +text(r, ".capacity"), utilization: text(r, ".utilization"),
				points: (r.querySelector("polyline")?.getAttribute("points") || "").split(" ").filter(Boolean).length}))}))
	};
})()`

// chromium finds Debian's Chromium (apt-get install chromium) or another build of it on PATH.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	t.Skip("no chromium binary on PATH (apt-get install -y chromium): the dashboard's browser test needs headless Chromium")
	return ""
}

// The page, in a real headless Chromium, shows the agents with their capacity and free slots, a pool's workers with
// their calls rising as calls run, and a shared limit's utilisation rising under the calls and falling once they
// stop, with its chart.
func TestDashboardInBrowser(t *testing.T) {
	exe := chromium(t)
	f := startFleet(t, 2, 2)
	d := newDashboard(t, f.url, Options{Refresh: 250 * time.Millisecond})
	srv := httptest.NewServer(d)
	defer srv.Close()
	defer d.Close() // ends the page's event stream, which srv.Close would wait for

	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), chromedp.ExecPath(exe), chromedp.Headless,
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		// The machine's network is closed: without these Chromium's own connections are refused and it stalls.
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.UserDataDir(t.TempDir()))
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	// The browser lives as long as the context of its first run: start it with no deadline, bound the test apart.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start %s: %v", exe, err)
	}
	ctx, cancel := context.WithTimeout(bctx, 45*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL), chromedp.WaitVisible("#agents tr[data-agent]")); err != nil {
		t.Fatalf("open the page: %v", err)
	}
	read := func() (shown, error) { return chromedp.Run(ctx, chromedp.Evaluate[shown](readPage)) }
	// page polls the page until check accepts what it shows, drawn from a snapshot newer than the last one checked.
	var at float64
	page := func(what string, check func(s shown) error) {
		t.Helper()
		testutil.Eventually(t, 15*time.Second, func() error {
			s, err := read()
			if err != nil {
				return err
			}
			if s.At <= at {
				return fmt.Errorf("%s: the page shows the snapshot of %f still", what, s.At)
			}
			if err := check(s); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			at = s.At
			return nil
		})
	}

	page("two idle agents", func(s shown) error {
		if s.Stream != "live" {
			return fmt.Errorf("event stream %q, want live", s.Stream)
		}
		if len(s.Agents) != 2 {
			return fmt.Errorf("%d agents listed", len(s.Agents))
		}
		for _, a := range s.Agents {
			if a.Capacity != 2 || a.Free != 2 || a.Status != StatusUp {
				return fmt.Errorf("agent %+v, want capacity 2, free 2, up", a)
			}
		}
		return nil
	})

	// A pool of 3 workers sharing a limit of 10 calls per 2 s, then calls as fast as the limit lets them.
	api := newPool(t, demo.APIWorkerKind, client.Options{Mode: client.Fleet, Conn: f.nc, MaxWorkers: 3,
		HeartbeatInterval: 200 * time.Millisecond, Limits: []limits.Limit{
			limits.CallLimit{Window: 2 * time.Second, Capacity: 10},
			limits.RateLimit{Key: "tokens", Window: time.Second, Capacity: 1e6, Algorithm: limits.TokenBucket}}}, "key")
	id := poolID(t, api)
	set := "pool-" + id
	page("the pool's capacity taken", func(s shown) error {
		free := 0
		for _, a := range s.Agents {
			free += a.Free
		}
		if free != 1 {
			return fmt.Errorf("agents %+v: %d free, want 4 less the pool's 3", s.Agents, free)
		}
		return nil
	})
	callCtx, stopCalls := context.WithCancel(context.Background())
	var calls sync.WaitGroup
	for range 3 {
		calls.Go(func() {
			for callCtx.Err() == nil {
				_, err := client.CallCtx[string](callCtx, api, "CallAPI", "prompt").Result(callCtx)
				if err != nil && !errors.Is(err, context.Canceled) {
					t.Errorf("CallAPI: %v", err)
					return
				}
			}
		})
	}
	defer calls.Wait()
	defer stopCalls()

	pool := func(s shown) (calls int, err error) {
		for _, p := range s.Pools {
			if p.ID != id {
				continue
			}
			if len(p.Workers) != 3 {
				return 0, fmt.Errorf("pool %s lists %d workers, want 3", id, len(p.Workers))
			}
			sum := 0
			for _, w := range p.Workers {
				if w.Health != HealthAlive || !strings.HasPrefix(w.ID, id) {
					return 0, fmt.Errorf("worker %+v, want alive and of pool %s", w, id)
				}
				sum += w.Calls
			}
			if sum != p.Calls {
				return 0, fmt.Errorf("pool %s: workers' calls add up to %d, the pool shows %d", id, sum, p.Calls)
			}
			return sum, nil
		}
		return 0, fmt.Errorf("pool %s not listed", id)
	}
	callCount := func(s shown) (util string, points int, err error) {
		for _, ls := range s.Sets {
			for _, l := range ls.Limits {
				if ls.Name == set && l.Key == limits.CallCountKey {
					if l.Capacity != 10 {
						return "", 0, fmt.Errorf("%s capacity %d, want 10", set, l.Capacity)
					}
					return l.Utilization, l.Points, nil
				}
			}
		}
		return "", 0, fmt.Errorf("limit %s/call_count not listed", set)
	}

	var first int
	page("the pool's workers and calls", func(s shown) error {
		var err error
		if first, err = pool(s); err == nil && first == 0 {
			err = errors.New("no calls shown yet")
		}
		return err
	})
	page("calls rising", func(s shown) error {
		n, err := pool(s)
		if err == nil && n <= first+5 {
			err = fmt.Errorf("%d calls shown, want more than %d", n, first+5)
		}
		return err
	})
	page("the limit in use", func(s shown) error {
		util, points, err := callCount(s)
		if err == nil && (util == "0%" || points < 2) {
			err = fmt.Errorf("utilisation %s with a chart of %d points, want some use and a line", util, points)
		}
		return err
	})

	// Once the calls stop, the window empties: the page shows the limit unused again.
	stopCalls()
	calls.Wait()
	page("the limit unused again", func(s shown) error {
		util, _, err := callCount(s)
		if err == nil && util != "0%" {
			err = fmt.Errorf("utilisation %s, want 0%%", util)
		}
		return err
	})
}
