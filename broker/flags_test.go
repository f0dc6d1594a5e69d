package broker_test

import (
	"flag"
	"io"
	"testing"

	"github.com/natsfleet/natsfleet/broker"
)

func TestAddFlags(t *testing.T) {
	var o broker.Options
	fs := flag.NewFlagSet("cmd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o.AddFlags(fs)
	err := fs.Parse([]string{"--nats", "nats://a:4222,nats://b:4222", "--user", "u", "--password", "p",
		"--token", "t", "--creds", "c.creds", "--nkey", "n.nk", "--tls-cert", "c.pem", "--tls-key", "k.pem",
		"--tls-ca", "ca.pem"})
	if err != nil {
		t.Fatal(err)
	}
	want := broker.Options{URL: "nats://a:4222,nats://b:4222", User: "u", Password: "p", Token: "t",
		CredentialsFile: "c.creds", NKeySeedFile: "n.nk", TLSCertFile: "c.pem", TLSKeyFile: "k.pem",
		TLSCAFile: "ca.pem"}
	if o != want {
		t.Errorf("parsed %+v, want %+v", o, want)
	}
}
