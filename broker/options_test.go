package broker_test

import (
	"crypto/tls"
	"errors"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/internal/testutil"
)

// applied runs nats.go options over nats.go's defaults, as nats.Connect does.
func applied(t *testing.T, o broker.Options) nats.Options {
	t.Helper()
	opts, err := o.NATSOptions()
	if err != nil {
		t.Fatal(err)
	}
	no := nats.GetDefaultOptions()
	for _, opt := range opts {
		if err := opt(&no); err != nil {
			t.Fatal(err)
		}
	}
	return no
}

func TestNATSOptionsDefaults(t *testing.T) {
	t.Parallel()
	got := applied(t, broker.Options{})
	if got.Name != "natsfleet" || got.ReconnectWait != 250*time.Millisecond || got.MaxReconnect != -1 || got.Timeout != 5*time.Second {
		t.Fatalf("defaults: name %q, reconnect wait %v, max reconnects %d, timeout %v", got.Name, got.ReconnectWait, got.MaxReconnect, got.Timeout)
	}
	if got.Secure || got.User != "" || got.Token != "" {
		t.Fatalf("defaults enable TLS or auth: %+v", got)
	}
	got = applied(t, broker.Options{Name: "w1", ReconnectWait: time.Second, MaxReconnects: 3, ConnectTimeout: time.Minute, User: "u", Password: "p"})
	if got.Name != "w1" || got.ReconnectWait != time.Second || got.MaxReconnect != 3 || got.Timeout != time.Minute || got.User != "u" || got.Password != "p" {
		t.Fatalf("settings not applied: %+v", got)
	}
	cfg := &tls.Config{ServerName: "x"}
	if got := applied(t, broker.Options{TLSConfig: cfg, TLSCAFile: "/ignored"}); !got.Secure || got.TLSConfig != cfg {
		t.Fatalf("TLSConfig not used: secure %v, config %p", got.Secure, got.TLSConfig)
	}
}

func TestNATSOptionsErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		opts broker.Options
		want string
	}{
		{broker.Options{User: "u", Token: "t"}, "broker: set at most one of user/password, token, nkey seed file and credentials file"},
		{broker.Options{Token: "t", CredentialsFile: "x.creds"}, "broker: set at most one of"},
		{broker.Options{Password: "p"}, "broker: password set without user"},
		{broker.Options{TLSCertFile: "c.pem"}, "broker: set TLS cert file and TLS key file together"},
		{broker.Options{TLSKeyFile: "k.pem"}, "broker: set TLS cert file and TLS key file together"},
		{broker.Options{ReconnectWait: -time.Second}, "broker: negative reconnect wait or connect timeout"},
		{broker.Options{NKeySeedFile: "/does/not/exist.nk"}, "broker: nkey seed file /does/not/exist.nk: "},
		{broker.Options{CredentialsFile: "/does/not/exist.creds"}, "broker: credentials file: stat /does/not/exist.creds: no such file or directory"},
	}
	for _, tc := range cases {
		_, err := tc.opts.NATSOptions()
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("NATSOptions(%+v) error = %v, want prefix %q", tc.opts, err, tc.want)
		}
		if _, cerr := broker.Connect(tc.opts); cerr == nil || cerr.Error() != err.Error() {
			t.Errorf("Connect(%+v) error = %v, want the NATSOptions error", tc.opts, cerr)
		}
	}
}

func TestConnectErrorHidesCredentials(t *testing.T) {
	t.Parallel()
	port := testutil.FreePorts(t, 1)[0] // nothing listens there once FreePorts returns
	url := "nats://alice:s3cret@127.0.0.1:" + strconv.Itoa(port)
	_, err := broker.Connect(broker.Options{URL: url + ",nats://tok@127.0.0.1:" + strconv.Itoa(port), ConnectTimeout: time.Second})
	if err == nil {
		t.Fatal("Connect to a closed port succeeded")
	}
	want := "broker: connect to nats://127.0.0.1:" + strconv.Itoa(port) + ",nats://127.0.0.1:" + strconv.Itoa(port) + ": "
	if !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "tok@") {
		t.Fatalf("error %q, want prefix %q and no credentials", err, want)
	}
	if !errors.Is(err, nats.ErrNoServers) {
		t.Fatalf("error %q does not wrap nats.ErrNoServers", err)
	}
}

// Not parallel: it sets process environment variables.
func TestEnvRoundTrip(t *testing.T) {
	full := broker.Options{
		URL: "nats://a:4222,nats://b:4222", User: "u", Password: "p=w d", Token: "t", NKeySeedFile: "/s.nk",
		CredentialsFile: "/c.creds", TLSCertFile: "/cert.pem", TLSKeyFile: "/key.pem", TLSCAFile: "/ca.pem",
	}
	env := full.Env()
	if len(env) != 9 {
		t.Fatalf("Env() has %d entries, want 9: %q", len(env), env)
	}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, "NATSFLEET_NATS_") {
			t.Fatalf("entry %q lacks the NATSFLEET_NATS_ prefix", kv)
		}
		t.Setenv(k, v)
	}
	if got := broker.OptionsFromEnv(); !reflect.DeepEqual(got, full) {
		t.Fatalf("OptionsFromEnv() = %+v, want %+v", got, full)
	}
	if os.Getenv(broker.EnvPassword) != "p=w d" {
		t.Fatalf("%s = %q", broker.EnvPassword, os.Getenv(broker.EnvPassword))
	}

	// Name, timeouts and TLSConfig stay with the parent; empty fields are left out.
	partial := broker.Options{URL: "nats://x:1", Name: "parent", ConnectTimeout: time.Second, TLSConfig: &tls.Config{}}
	if got := partial.Env(); !reflect.DeepEqual(got, []string{"NATSFLEET_NATS_URL=nats://x:1"}) {
		t.Fatalf("Env() = %q", got)
	}
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		t.Setenv(k, "")
	}
	if got := broker.OptionsFromEnv(); !reflect.DeepEqual(got, broker.Options{}) {
		t.Fatalf("OptionsFromEnv() with nothing set = %+v", got)
	}
}
