package broker

import (
	"flag"

	"github.com/nats-io/nats.go"
)

// AddFlags defines on fs the flags by which a command line says how to reach NATS, each setting a field of o when
// fs is parsed: --nats URL[,URL], the credentials --user and --password, --token, --creds FILE and --nkey FILE, and
// TLS with --tls-cert, --tls-key and --tls-ca. Every natsfleet command that connects (cmd/worker, cmd/dashboard)
// takes them alike.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.URL, "nats", "", "NATS server URL(s), comma-separated (default "+nats.DefaultURL+")")
	fs.StringVar(&o.User, "user", "", "NATS user")
	fs.StringVar(&o.Password, "password", "", "NATS password")
	fs.StringVar(&o.Token, "token", "", "NATS token")
	fs.StringVar(&o.CredentialsFile, "creds", "", "NATS credentials file")
	fs.StringVar(&o.NKeySeedFile, "nkey", "", "NATS nkey seed file")
	fs.StringVar(&o.TLSCertFile, "tls-cert", "", "TLS client certificate file")
	fs.StringVar(&o.TLSKeyFile, "tls-key", "", "TLS client key file")
	fs.StringVar(&o.TLSCAFile, "tls-ca", "", "TLS CA file to verify the server")
}
