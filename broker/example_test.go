package broker_test

import (
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/natsfleet/natsfleet/broker"
)

// An embedded server for a program or a test: JetStream on, a free port, its store in a temp dir.
func ExampleStartEmbedded() {
	srv, err := broker.StartEmbedded(broker.EmbeddedOptions{})
	if err != nil {
		panic(err)
	}
	defer srv.Shutdown()

	// In-process: no TCP, works even with Port -1.
	nc, err := srv.Connect()
	if err != nil {
		panic(err)
	}
	defer nc.Close()

	sub, err := nc.SubscribeSync("greet")
	if err != nil {
		panic(err)
	}
	// Other processes connect over TCP with the client URL.
	other, err := broker.Connect(broker.Options{URL: srv.ClientURL()})
	if err != nil {
		panic(err)
	}
	defer other.Close()
	if err := nc.Flush(); err != nil {
		panic(err)
	}
	if err := other.Publish("greet", []byte("hello")); err != nil {
		panic(err)
	}
	msg, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		panic(err)
	}
	fmt.Println(string(msg.Data), srv.Server().JetStreamEnabled())
	// Output: hello true
}

// Three servers forming a cluster on fixed ports: each is given every route URL, its own included. (Not run as a
// test: the ports may be taken on the machine running it.)
func ExampleEmbeddedOptions_cluster() {
	routes := []string{"nats-route://127.0.0.1:16222", "nats-route://127.0.0.1:16223", "nats-route://127.0.0.1:16224"}
	for i, port := range []int{16222, 16223, 16224} {
		srv, err := broker.StartEmbedded(broker.EmbeddedOptions{
			ServerName:  fmt.Sprintf("n%d", i+1),
			ClusterName: "dev",
			ClusterPort: port,
			Routes:      routes,
		})
		if err != nil {
			panic(err)
		}
		defer srv.Shutdown()
		fmt.Println(srv.ClusterURL()) // nats-route://127.0.0.1:1622x
	}
}

// Subject names are built in one place.
func ExampleSubjects() {
	s := broker.Subjects{} // prefix "fleet"
	fmt.Println(s.Worker("W1"))
	fmt.Println(s.Control("W1"))
	fmt.Println(s.Heartbeats("DataProcessor"))
	fmt.Println(broker.Subjects{Prefix: "staging"}.Spawn("agent-3"))
	fmt.Println(broker.ValidToken("W1"), broker.ValidToken("a.b"))
	// Output:
	// fleet.w.W1
	// fleet.w.W1.ctl
	// fleet.hb.DataProcessor.*
	// staging.agent.agent-3.spawn
	// true false
}

// A parent hands its connection settings to a child process through the environment.
func ExampleOptions_Env() {
	parent := broker.Options{URL: "nats://10.0.0.5:4222", Token: "s3cret"}
	// The child calls broker.OptionsFromEnv() and then broker.Connect.
	cmd := exec.Command("worker")
	cmd.Env = append(os.Environ(), parent.Env()...)
	fmt.Println(parent.Env())
	// Output: [NATSFLEET_NATS_URL=nats://10.0.0.5:4222 NATSFLEET_NATS_TOKEN=s3cret]
}
