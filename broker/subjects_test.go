package broker_test

import (
	"testing"

	"github.com/natsfleet/natsfleet/broker"
)

func TestSubjects(t *testing.T) {
	t.Parallel()
	def, custom := broker.Subjects{}, broker.Subjects{Prefix: "acme.prod"}
	cases := []struct {
		got, want string
	}{
		{def.Worker("W1"), "fleet.w.W1"},
		{def.Control("W1"), "fleet.w.W1.ctl"},
		{def.Spawn("A7"), "fleet.agent.A7.spawn"},
		{def.AgentDiscover(), "fleet.agent.discover"},
		{def.Heartbeat("DataProcessor", "W1"), "fleet.hb.DataProcessor.W1"},
		{def.Heartbeats("DataProcessor"), "fleet.hb.DataProcessor.*"},
		{def.Heartbeats(""), "fleet.hb.*.*"},
		{def.KindDiscover("DataProcessor"), "fleet.kind.DataProcessor.discover"},
		{def.PoolKeepalive("P1"), "fleet.pool.P1.alive"},
		{custom.PoolKeepalive("P1"), "acme.prod.pool.P1.alive"},
		{custom.Worker("W1"), "acme.prod.w.W1"},
		{custom.Control("W1"), "acme.prod.w.W1.ctl"},
		{custom.Spawn("A7"), "acme.prod.agent.A7.spawn"},
		{custom.AgentDiscover(), "acme.prod.agent.discover"},
		{custom.Heartbeat("K", "W1"), "acme.prod.hb.K.W1"},
		{custom.Heartbeats(""), "acme.prod.hb.*.*"},
		{custom.KindDiscover("K"), "acme.prod.kind.K.discover"},
	}
	for _, tc := range cases {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestValidToken(t *testing.T) {
	t.Parallel()
	cases := []struct {
		s    string
		want bool
	}{
		{"W1", true},
		{"DataProcessor", true},
		{"a-b_c:9", true},
		{"ünïcode", true},
		{"", false},
		{"a.b", false},
		{"*", false},
		{"a>", false},
		{"a b", false},
		{"a\tb", false},
		{"a\n", false},
		{"\u00a0", false},
	}
	for _, tc := range cases {
		if got := broker.ValidToken(tc.s); got != tc.want {
			t.Errorf("ValidToken(%q) = %v, want %v", tc.s, got, tc.want)
		}
	}
}
