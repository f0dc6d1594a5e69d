package main

import "fmt"

// ratioSpecs are the ratios the command prints, with the targets of issue 7 (and the older ones of issues 3 and 4
// where they add something). Each is a ratio of medians measured in the same run.
var ratioSpecs = func() []ratioSpec {
	s := []ratioSpec{
		{name: "thread seq: natsfleet time / raw pool time", num: key{rowThreadSeq, cNatsfleet},
			den: key{rowThreadSeq, cRawPool}, op: "<=", target: 3, source: "issue 7"},
		{name: "thread seq: natsfleet time / pond time (faster than pond)", num: key{rowThreadSeq, cNatsfleet},
			den: key{rowThreadSeq, cPond}, op: "<", target: 1, source: "issue 7"},
		{name: "thread seq: natsfleet time / ants time", num: key{rowThreadSeq, cNatsfleet},
			den: key{rowThreadSeq, cAnts}},
		{name: "thread pipelined: natsfleet / raw pool throughput", num: key{rowThreadPipe, cNatsfleet},
			den: key{rowThreadPipe, cRawPool}, op: ">=", target: 0.4, source: "issue 7"},
		{name: "thread pipelined: natsfleet / pond throughput (faster than pond)", num: key{rowThreadPipe, cNatsfleet},
			den: key{rowThreadPipe, cPond}, op: ">", target: 1, source: "issue 7"},
		{name: "thread pipelined: natsfleet / ants throughput", num: key{rowThreadPipe, cNatsfleet},
			den: key{rowThreadPipe, cAnts}},
		{name: "process seq: natsfleet time / micro time", num: key{rowProcSeq, cNFProc1},
			den: key{rowProcSeq, cMicro1}, op: "<=", target: 1.1, source: "issue 7"},
		{name: "process seq: natsfleet time / raw nc.Request time", num: key{rowProcSeq, cNFProc1},
			den: key{rowProcSeq, cRawReq}, op: "<=", target: 1.3, source: "issue 3"},
	}
	for _, d := range depths {
		row := rowProcPipe(d)
		s = append(s,
			ratioSpec{name: fmt.Sprintf("process pipelined %d: natsfleet / micro throughput", d),
				num: key{row, cNFProc4}, den: key{row, cMicro4}, op: ">=", target: 1, source: "issue 7"},
			ratioSpec{name: fmt.Sprintf("process pipelined %d: natsfleet / raw unbatched throughput", d),
				num: key{row, cNFProc4}, den: key{row, cRawPipe}, op: ">=", target: 2, source: "issue 7 (batching)"},
			ratioSpec{name: fmt.Sprintf("process pipelined %d: natsfleet / raw throughput", d),
				num: key{row, cNFProc4}, den: key{row, cRawPipe}, op: ">=", target: 0.8, source: "issue 3"},
		)
	}
	for _, d := range depths {
		s = append(s,
			ratioSpec{name: fmt.Sprintf("fleet pipelined %d: natsfleet fleet / micro ×4 throughput", d),
				num: key{rowFleetPipe(d), cNFFleet}, den: key{rowProcPipe(d), cMicro4}},
			ratioSpec{name: fmt.Sprintf("fleet pipelined %d: natsfleet fleet / raw throughput", d),
				num: key{rowFleetPipe(d), cNFFleet}, den: key{rowProcPipe(d), cRawPipe}},
		)
	}
	s = append(s,
		ratioSpec{name: "restart: calls/s through a 1.5 s restart / steady (0.625 if recovery were free)",
			num: key{rowRestart, cNFRestart}, den: key{rowRestart, cNFSteady}},
		ratioSpec{name: "restart: seconds calls stalled beyond the 1.5 s outage", num: key{rowRestart, cNFStall},
			op: "<=", target: 0.5, source: "issue 15"},
		ratioSpec{name: "uneven: micro random time / natsfleet least-active time", num: key{rowUneven, cMicroRandom},
			den: key{rowUneven, cNFLeast}, op: ">=", target: 1.5, source: "issue 7"},
		ratioSpec{name: "uneven: natsfleet round robin time / least-active time", num: key{rowUneven, cNFRoundRobin},
			den: key{rowUneven, cNFLeast}},
	)
	for _, alg := range algorithms {
		s = append(s, ratioSpec{name: fmt.Sprintf("balancer %s: 4,096 / 4 workers time", alg),
			num: key{rowBalancer(alg), cBal4096}, den: key{rowBalancer(alg), cBal4}, op: "<=", target: 2,
			source: "issues 2, 7"})
	}
	s = append(s,
		ratioSpec{name: "KV exact / raw CAS admissions", num: key{rowKV, cKVExact}, den: key{rowKV, cRawCAS},
			op: ">=", target: 10, source: "issue 17 (coalescing)"},
		ratioSpec{name: "KV exact, 1,000 partitions / raw CAS admissions", num: key{rowKVPart, cKVPart},
			den: key{rowKV, cRawCAS}},
		ratioSpec{name: "KV lease / KV exact admissions", num: key{rowKV, cKVLease}, den: key{rowKV, cKVExact},
			op: ">=", target: 10, source: "issues 4, 7"},
		ratioSpec{name: "in-memory acquire+release, ns per op (wall, 8 goroutines)", num: key{rowMemLimit, cMemSet},
			op: "<=", target: 2000, source: "issue 4"},
		ratioSpec{name: "in-memory: natsfleet set time / rate.Limiter.Allow time", num: key{rowMemLimit, cMemSet},
			den: key{rowMemLimit, cRateAllow}},
		ratioSpec{name: "scale: 4,096 / 4 fleet workers calls/s at 256 in flight", num: key{rowScaleCalls, cNFScale4096},
			den: key{rowScaleCalls, cNFScale4}, op: ">=", target: 0.67, source: "issue 18"},
		ratioSpec{name: "scale: fleet pool of 16,384 created, s", num: key{rowFleetLife(16384), "create"},
			op: "<=", target: 2, source: "issue 18"},
		ratioSpec{name: "scale: fleet pool of 16,384 stopped, s", num: key{rowFleetLife(16384), "stop"},
			op: "<=", target: 1, source: "issue 18"},
		ratioSpec{name: "scale: fleet pool create, 16,384 / 1,024 workers time", num: key{rowFleetLife(16384), "create"},
			den: key{rowFleetLife(1024), "create"}, op: "<=", target: 20, source: "issue 18"},
		ratioSpec{name: "scale: fleet pool stop, 16,384 / 1,024 workers time", num: key{rowFleetLife(16384), "stop"},
			den: key{rowFleetLife(1024), "stop"}, op: "<=", target: 20, source: "issue 18"},
		ratioSpec{name: "scale: agents' KiB per fleet worker (16,384 workers)",
			num: key{rowFleetLife(16384), "agents' memory per worker"}, op: "<=", target: 38, source: "issue 18"},
		ratioSpec{name: "scale: thread pool of 65,536 stopped, s", num: key{rowThreadLife, "stop"}, op: "<=",
			target: 2, source: "issue 18"},
		ratioSpec{name: "scale: 2 clients, s for 4 calls of 50 ms beside 4 of 2 s (ideal 0.05)",
			num: key{rowShared, cNFShared}, op: "<=", target: 0.1, source: "issue 18"},
		ratioSpec{name: "memory: natsfleet thread / pond bytes per in-flight call",
			num: key{rowMemInFlight, cMemThread}, den: key{rowMemInFlight, cMemPond}},
	)
	return s
}()
