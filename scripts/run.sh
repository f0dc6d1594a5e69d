#!/usr/bin/env bash
# run.sh — natsfleet end to end on this machine (what `make run` does):
#
#   1. builds the binaries into bin/ (make build);
#   2. starts bin/embedded-nats (NATS with JetStream, a free loopback port, a temporary store) and waits for its
#      ready file;
#   3. starts two worker agents (bin/worker --capacity 4), the first also serving two standing DataProcessor workers,
#      and waits for each to print its ready line;
#   4. starts bin/dashboard (the fleet's live page) on DASHBOARD_ADDR and prints its URL;
#   5. runs bin/fleetdemo against them, with a deadline;
#   6. on exit, Ctrl-C or SIGTERM: stops everything it started (SIGTERM, then SIGKILL after STOP_TIMEOUT seconds),
#      removes its temporary directory, and checks that no process it started is left.
#
# Exit status: the demo's; non-zero also when start-up fails or a process had to be killed or was left behind.
# Environment: DEMO_TIMEOUT (default 80 s), READY_TIMEOUT (30 s), STOP_TIMEOUT (5 s), DASHBOARD_ADDR (default
# 127.0.0.1:0, a free port), KEEP_LOGS=1 to print the logs of the server, agents and dashboard even on success.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$ROOT/bin
DEMO_TIMEOUT=${DEMO_TIMEOUT:-80}
READY_TIMEOUT=${READY_TIMEOUT:-30}
STOP_TIMEOUT=${STOP_TIMEOUT:-5}
DASHBOARD_ADDR=${DASHBOARD_ADDR:-127.0.0.1:0}
command -v go >/dev/null 2>&1 || export PATH=/usr/local/go/bin:$PATH

# Each process starts in a session of its own (setsid execs it in place: a background job is no group leader, so
# setsid does not fork and $! is the process itself). A Ctrl-C on the terminal then reaches only this script (and
# make), which stops the processes in order: the demo first, then the agents, the server last.
SETSID=()
command -v setsid >/dev/null 2>&1 && SETSID=(setsid)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/natsfleet-run.XXXXXX")
PIDS=()  # processes started, in start order
NAMES=()
FAILED=0

START_US=${EPOCHREALTIME/[.,]/}
say() {
	local ms=$(((${EPOCHREALTIME/[.,]/} - START_US) / 1000))
	printf '[run %d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*" >&2
}

# start NAME CMD... runs CMD in the background with its output in $WORK/NAME.log and records its PID.
start() {
	local name=$1
	shift
	"${SETSID[@]}" "$@" >"$WORK/$name.log" 2>&1 </dev/null &
	PIDS+=($!)
	NAMES+=("$name")
	say "started $name (pid $!): $*"
}

alive() { kill -0 "$1" 2>/dev/null; }

# wait_for NAME PID DESCRIPTION TEST... polls TEST every 100 ms until it succeeds; fails when PID exits first or
# READY_TIMEOUT passes.
wait_for() {
	local name=$1 pid=$2 what=$3
	shift 3
	local deadline=$((SECONDS + READY_TIMEOUT))
	until "$@"; do
		if ! alive "$pid"; then
			say "$name exited before $what"
			return 1
		fi
		if ((SECONDS >= deadline)); then
			say "$name: no $what within ${READY_TIMEOUT}s"
			return 1
		fi
		sleep 0.1
	done
}

# stop_pids PID... sends SIGTERM, waits up to STOP_TIMEOUT seconds, then SIGKILLs what is left.
stop_pids() {
	local pid live=()
	for pid in "$@"; do
		if alive "$pid"; then
			kill -TERM "$pid" 2>/dev/null || true
			live+=("$pid")
		fi
	done
	((${#live[@]})) || return 0
	local deadline=$((SECONDS + STOP_TIMEOUT)) any
	while :; do
		any=0
		for pid in "${live[@]}"; do alive "$pid" && any=1; done
		((any)) || break
		((SECONDS < deadline)) || break
		sleep 0.1
	done
	for pid in "${live[@]}"; do
		if alive "$pid"; then
			say "pid $pid did not stop within ${STOP_TIMEOUT}s of SIGTERM; killing it"
			kill -KILL "$pid" 2>/dev/null || true
			FAILED=1
		fi
		wait "$pid" 2>/dev/null || true
	done
}

# find_leftovers sets LEFT to the processes this run may have left: children of this script, and anything running a
# binary of $BIN (the demo's process-mode children run bin/fleetdemo in process groups of their own). The ps that
# lists them has exited by the time they are checked, so it is not counted itself.
find_leftovers() {
	local listing pid ppid args
	LEFT=()
	listing=$(ps -e -o pid=,ppid=,args=) || return 0
	while read -r pid ppid args; do
		[[ $pid == "$$" ]] && continue
		if [[ $ppid == "$$" || $args == "$BIN"/* ]] && alive "$pid"; then
			LEFT+=("$pid")
		fi
	done <<<"$listing"
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	set +e
	# Reverse start order: the demo, then the agents (their workers drain while NATS is still up), then the server.
	local i
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		if alive "${PIDS[i]}"; then
			say "stopping ${NAMES[i]} (pid ${PIDS[i]})"
			stop_pids "${PIDS[i]}"
		fi
	done
	if ((rc != 0 || FAILED)) || [[ ${KEEP_LOGS:-} == 1 ]]; then
		for i in "${!NAMES[@]}"; do
			[[ ${NAMES[i]} == demo ]] && continue
			say "--- last lines of ${NAMES[i]}.log"
			tail -n 20 "$WORK/${NAMES[i]}.log" >&2 2>/dev/null
		done
	fi
	rm -rf "$WORK"
	find_leftovers
	if ((${#LEFT[@]})); then
		say "processes left behind:"
		ps -o pid,ppid,pgid,args -p "$(IFS=,; echo "${LEFT[*]}")" >&2
		# They are ours (children of this script, or running our binaries): do not leave them running.
		kill -KILL "${LEFT[@]}" 2>/dev/null
		FAILED=1
	else
		say "no process left running"
	fi
	((rc == 0 && FAILED)) && rc=1
	say "exit status $rc"
	exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM

cd "$ROOT"
say "building binaries"
make --no-print-directory build

# 1. NATS with JetStream.
start nats "$BIN/embedded-nats" -addr 127.0.0.1:0 -store "$WORK/store" -ready-file "$WORK/nats.url"
wait_for nats "${PIDS[0]}" "ready file" test -s "$WORK/nats.url"
URL=$(<"$WORK/nats.url")
say "NATS ready at $URL"

# 2. Two agents; the first also serves standing DataProcessor workers built with multiplier 10.
start agent1 "$BIN/worker" --nats "$URL" --capacity 4 --serve DataProcessor=2 --args 'DataProcessor=[10]'
start agent2 "$BIN/worker" --nats "$URL" --capacity 4
for i in 1 2; do
	wait_for "agent$i" "${PIDS[i]}" "ready line" grep -q 'serving on' "$WORK/agent$i.log"
	say "agent$i ready: $(grep -m1 'serving on' "$WORK/agent$i.log")"
done

# 3. The dashboard, up while the demo runs: open its URL to watch the agents, the pools' workers and the limits.
start dashboard "$BIN/dashboard" --nats "$URL" --addr "$DASHBOARD_ADDR"
wait_for dashboard "${PIDS[3]}" "ready line" grep -q 'serving on' "$WORK/dashboard.log"
DASHBOARD_URL=$(grep -m1 -o 'http://[^ ]*' "$WORK/dashboard.log")
say "dashboard at $DASHBOARD_URL (live while the demo runs)"

# 4. The demo. It runs as a background job so that this script can enforce a deadline and react to signals.
say "running bin/fleetdemo (deadline ${DEMO_TIMEOUT}s)"
"${SETSID[@]}" "$BIN/fleetdemo" --nats "$URL" --timeout "$((DEMO_TIMEOUT - 5))s" </dev/null &
DEMO=$!
PIDS+=("$DEMO")
NAMES+=(demo)
# The demo enforces its own deadline; this one catches a demo that hangs anyway.
deadline=$((SECONDS + DEMO_TIMEOUT))
while alive "$DEMO" && ((SECONDS < deadline)); do
	sleep 0.2
done
if alive "$DEMO"; then
	say "fleetdemo still running after ${DEMO_TIMEOUT}s"
	exit 124
fi
demo_rc=0
wait "$DEMO" || demo_rc=$?
say "fleetdemo exited with status $demo_rc"
exit "$demo_rc"
