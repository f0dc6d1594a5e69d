package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/examples/demo"
	"github.com/natsfleet/natsfleet/internal/testutil"
)

const envOrphanParent = "NATSFLEET_TEST_ORPHAN_PARENT"

// orphanParent is a process that starts a Process pool, prints its workers' PIDs and waits to be killed.
func orphanParent() {
	p, err := client.New(context.Background(), demo.DataProcessorKind, client.Options{Mode: client.Process, MaxWorkers: 2}, 1)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	for i := range 2 {
		ws, err := p.WorkerStats(i)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("pid", ws.PID)
	}
	select {}
}

func TestChildrenDieWithTheirParent(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envOrphanParent+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pids []int
	sc := bufio.NewScanner(out)
	for len(pids) < 2 && sc.Scan() {
		line := sc.Text()
		if pid, ok := strings.CutPrefix(line, "pid "); ok {
			n, err := strconv.Atoi(pid)
			if err != nil {
				t.Fatal(err)
			}
			pids = append(pids, n)
		} else if strings.HasPrefix(line, "error") {
			t.Fatal(line)
		}
	}
	if len(pids) != 2 {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("parent reported %d worker PIDs", len(pids))
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	testutil.Eventually(t, 10*time.Second, func() error {
		for _, pid := range pids {
			// Signal 0 probes for the process; a zombie waiting for its reaper counts as gone.
			if err := syscall.Kill(pid, 0); err == nil && !zombie(pid) {
				return fmt.Errorf("worker process %d outlived its parent", pid)
			} else if err != nil && !errors.Is(err, syscall.ESRCH) {
				return err
			}
		}
		return nil
	})
}

func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}
