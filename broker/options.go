package broker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Options are the connection settings shared by clients and workers. Zero values mean the default noted on each field.
type Options struct {
	// URL of the server; a comma-separated list names several servers of one cluster. Default nats.DefaultURL.
	URL string
	// Name is the connection name shown in server monitoring. Default "natsfleet".
	Name string

	// Authentication: at most one of user/password, token, nkey seed file and credentials file. Default: none.
	User, Password  string
	Token           string
	NKeySeedFile    string // path to an nkey seed file
	CredentialsFile string // path to a .creds file (JWT + seed)

	// TLSCertFile and TLSKeyFile are the client certificate and its key (set both or neither); TLSCAFile verifies the
	// server. Setting any of them enables TLS. Default: no TLS unless the URL's scheme is tls://.
	TLSCertFile, TLSKeyFile, TLSCAFile string
	// TLSConfig is used instead of the three files when set. It cannot travel through Env.
	TLSConfig *tls.Config

	// ReconnectWait is the pause between reconnect attempts to the same server. Default 250ms.
	ReconnectWait time.Duration
	// MaxReconnects bounds reconnect attempts. Default -1 (forever): workers and clients outlive a server restart.
	// To disable reconnecting, pass nats.NoReconnect() to Connect.
	MaxReconnects int
	// ConnectTimeout bounds dialling and the handshake with one server. Default 5s.
	ConnectTimeout time.Duration
}

// Defaults of Options.
const (
	DefaultName           = "natsfleet"
	DefaultReconnectWait  = 250 * time.Millisecond
	DefaultMaxReconnects  = -1
	DefaultConnectTimeout = 5 * time.Second
)

func (o Options) url() string {
	if o.URL == "" {
		return nats.DefaultURL
	}
	return o.URL
}

// NATSOptions translates o into nats.go options, with defaults applied. It reads the nkey seed file, so a missing
// or bad seed is reported here; certificate files are read when connecting.
func (o Options) NATSOptions() ([]nats.Option, error) {
	auth := 0
	for _, set := range []bool{o.User != "" || o.Password != "", o.Token != "", o.NKeySeedFile != "", o.CredentialsFile != ""} {
		if set {
			auth++
		}
	}
	if auth > 1 {
		return nil, errors.New("broker: set at most one of user/password, token, nkey seed file and credentials file")
	}
	if o.User == "" && o.Password != "" {
		return nil, errors.New("broker: password set without user")
	}
	if o.TLSConfig == nil && (o.TLSCertFile == "") != (o.TLSKeyFile == "") {
		return nil, errors.New("broker: set TLS cert file and TLS key file together")
	}
	if o.ReconnectWait < 0 || o.ConnectTimeout < 0 {
		return nil, errors.New("broker: negative reconnect wait or connect timeout")
	}

	opts := []nats.Option{
		nats.Name(orDefault(o.Name, DefaultName)),
		nats.ReconnectWait(orDefault(o.ReconnectWait, DefaultReconnectWait)),
		nats.MaxReconnects(orDefault(o.MaxReconnects, DefaultMaxReconnects)),
		nats.Timeout(orDefault(o.ConnectTimeout, DefaultConnectTimeout)),
	}
	switch {
	case o.User != "":
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	case o.Token != "":
		opts = append(opts, nats.Token(o.Token))
	case o.NKeySeedFile != "":
		opt, err := nats.NkeyOptionFromSeed(o.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("broker: nkey seed file %s: %w", o.NKeySeedFile, err)
		}
		opts = append(opts, opt)
	case o.CredentialsFile != "":
		if _, err := os.Stat(o.CredentialsFile); err != nil {
			return nil, fmt.Errorf("broker: credentials file: %w", err)
		}
		opts = append(opts, nats.UserCredentials(o.CredentialsFile))
	}
	if o.TLSConfig != nil {
		opts = append(opts, nats.Secure(o.TLSConfig))
	} else {
		if o.TLSCertFile != "" {
			opts = append(opts, nats.ClientCert(o.TLSCertFile, o.TLSKeyFile))
		}
		if o.TLSCAFile != "" {
			opts = append(opts, nats.RootCAs(o.TLSCAFile))
		}
	}
	return opts, nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Connect connects to the server o names. extra options are applied after o's, so they win.
func Connect(opts Options, extra ...nats.Option) (*nats.Conn, error) {
	nopts, err := opts.NATSOptions()
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(opts.url(), append(nopts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("broker: connect to %s: %w", redactURLs(opts.url()), err)
	}
	return nc, nil
}

// redactURLs drops the user info (a password or token) from each URL of a comma-separated list bound for an
// error message.
func redactURLs(list string) string {
	urls := strings.Split(list, ",")
	for i, s := range urls {
		if u, err := url.Parse(strings.TrimSpace(s)); err == nil && u.User != nil {
			u.User = nil
			urls[i] = u.String()
		}
	}
	return strings.Join(urls, ",")
}

// Environment variables read by OptionsFromEnv and written by Options.Env.
const (
	EnvURL          = "NATSFLEET_NATS_URL"
	EnvUser         = "NATSFLEET_NATS_USER"
	EnvPassword     = "NATSFLEET_NATS_PASSWORD"
	EnvToken        = "NATSFLEET_NATS_TOKEN"
	EnvNKeySeedFile = "NATSFLEET_NATS_NKEY_SEED_FILE"
	EnvCredsFile    = "NATSFLEET_NATS_CREDS_FILE"
	EnvTLSCert      = "NATSFLEET_NATS_TLS_CERT"
	EnvTLSKey       = "NATSFLEET_NATS_TLS_KEY"
	EnvTLSCA        = "NATSFLEET_NATS_TLS_CA"
)

// envFields pairs each environment variable with the field it carries, so OptionsFromEnv and Env cannot disagree.
func (o *Options) envFields() []struct {
	key   string
	field *string
} {
	return []struct {
		key   string
		field *string
	}{
		{EnvURL, &o.URL}, {EnvUser, &o.User}, {EnvPassword, &o.Password}, {EnvToken, &o.Token},
		{EnvNKeySeedFile, &o.NKeySeedFile}, {EnvCredsFile, &o.CredentialsFile},
		{EnvTLSCert, &o.TLSCertFile}, {EnvTLSKey, &o.TLSKeyFile}, {EnvTLSCA, &o.TLSCAFile},
	}
}

// OptionsFromEnv reads the NATSFLEET_NATS_* variables a parent process set with Options.Env. Unset variables leave
// their fields at the zero value (the default).
func OptionsFromEnv() Options {
	var o Options
	for _, f := range o.envFields() {
		*f.field = os.Getenv(f.key)
	}
	return o
}

// Env returns o's server address and credentials as "KEY=value" entries for a child process's environment (append
// them to os.Environ()); the child reads them with OptionsFromEnv. Empty fields are left out. Name, timeouts and
// TLSConfig are not carried.
func (o Options) Env() []string {
	var env []string
	for _, f := range o.envFields() {
		if *f.field != "" {
			env = append(env, f.key+"="+*f.field)
		}
	}
	return env
}
