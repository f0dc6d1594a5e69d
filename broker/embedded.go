package broker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/logger"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// EmbeddedOptions configure an embedded nats-server with JetStream. Zero values mean the default noted on each field.
type EmbeddedOptions struct {
	// Host is the interface clients (and, by default, routes) listen on. Default "127.0.0.1".
	Host string
	// Port is the client port. Default 0: pick a free port. -1: no client listener, only in-process connections
	// (Embedded.Connect).
	Port int
	// StoreDir is the JetStream store directory. Default: a new temporary directory, removed by Shutdown.
	StoreDir string
	// ServerName names the server in a cluster and in monitoring. Default: the server's generated ID.
	ServerName string

	// ClusterName is the cluster's name; set it with ClusterPort and Routes to form a cluster. Default: no cluster.
	ClusterName string
	// ClusterHost is the interface the route listener binds. Default Host.
	ClusterHost string
	// ClusterPort is the route port. Default 0: no route listener; -1: pick a free port. Needs ClusterName.
	ClusterPort int
	// Routes are the route URLs of other servers of the cluster, e.g. "nats-route://127.0.0.1:6222". Listing the
	// server's own route URL is harmless, so every node of a cluster can be given the same list. Needs ClusterPort.
	Routes []string

	// JetStream limits in bytes. Default 0: the server's defaults (a share of memory and disk).
	JetStreamMaxMemory, JetStreamMaxStore int64
	// MaxPayload is the largest message the server accepts, in bytes. Default 0: the server's 1 MiB.
	MaxPayload int32
	// MaxPending is how many bytes the server holds for a client that reads too slowly before it cuts the client
	// off as a slow consumer. Default 0: the server's 64 MiB.
	MaxPending int64

	// Client authentication. Default: none, any client may connect. User/Password and NKeys may be combined;
	// Token excludes both. Embedded.Connect authenticates in-process connections with User/Password or Token.
	User, Password string
	Token          string
	// NKeys are public user nkeys ("U...") allowed to connect; such a client proves itself with the key's seed
	// (Options.NKeySeedFile).
	NKeys []string
	// TLSConfig enables TLS on the client listener; set ClientAuth to tls.RequireAndVerifyClientCert (with
	// ClientCAs) to require client certificates. Default: no TLS. Routes between servers are not encrypted by it.
	TLSConfig *tls.Config

	// Logger prints the server's log to stderr. Default off.
	Logger bool
	// ReadyTimeout bounds the wait for the server to accept connections. Default 10s.
	ReadyTimeout time.Duration
}

// Embedded is a nats-server with JetStream running inside this process.
type Embedded struct {
	srv       *server.Server
	opts      EmbeddedOptions
	tempStore string // StoreDir made by StartEmbedded, removed by Shutdown
	shutdown  sync.Once
}

// StartEmbedded starts a server and waits until it accepts connections.
func StartEmbedded(opts EmbeddedOptions) (*Embedded, error) {
	sopts, err := opts.serverOptions()
	if err != nil {
		return nil, err
	}
	e := &Embedded{opts: opts}
	if sopts.StoreDir == "" {
		dir, err := os.MkdirTemp("", "natsfleet-jetstream-")
		if err != nil {
			return nil, fmt.Errorf("broker: JetStream store: %w", err)
		}
		sopts.StoreDir, e.tempStore = dir, dir
	}
	srv, err := server.NewServer(sopts)
	if err != nil {
		e.removeTempStore()
		return nil, fmt.Errorf("broker: embedded server: %w", err)
	}
	e.srv = srv
	log := &serverLog{}
	if opts.Logger {
		log.out = logger.NewStdLogger(true, false, false, false, false)
	}
	srv.SetLoggerV2(log, false, false, false)
	srv.Start()

	timeout := orDefault(opts.ReadyTimeout, 10*time.Second)
	deadline := time.Now().Add(timeout)
	for {
		ready := srv.ReadyForConnections(100 * time.Millisecond)
		err := log.fatalErr() // also after ready: a server can listen with JetStream failed
		if err == nil {
			if ready {
				return e, nil
			}
			if time.Now().After(deadline) {
				err = fmt.Errorf("not ready for connections after %v", timeout)
			}
		}
		if err != nil {
			e.Shutdown()
			return nil, fmt.Errorf("broker: embedded server: %w", err)
		}
	}
}

func (o EmbeddedOptions) serverOptions() (*server.Options, error) {
	switch {
	case o.Port < -1 || o.Port > 65535:
		return nil, fmt.Errorf("broker: bad port %d", o.Port)
	case o.ClusterPort < -1 || o.ClusterPort > 65535:
		return nil, fmt.Errorf("broker: bad cluster port %d", o.ClusterPort)
	case o.ClusterPort != 0 && o.ClusterName == "":
		return nil, errors.New("broker: a cluster port needs a cluster name")
	case len(o.Routes) > 0 && o.ClusterPort == 0:
		return nil, errors.New("broker: routes need a cluster port")
	case o.ClusterName != "" && !ValidToken(o.ClusterName):
		return nil, fmt.Errorf("broker: bad cluster name %q", o.ClusterName)
	case o.Token != "" && (o.User != "" || len(o.NKeys) > 0):
		return nil, errors.New("broker: token authentication excludes users and nkeys")
	case o.User == "" && o.Password != "":
		return nil, errors.New("broker: password set without user")
	case o.ReadyTimeout < 0:
		return nil, errors.New("broker: negative ready timeout")
	}
	host := orDefault(o.Host, "127.0.0.1")
	sopts := &server.Options{
		ServerName:         o.ServerName,
		Host:               host,
		Port:               o.Port,
		DontListen:         o.Port == -1,
		JetStream:          true,
		StoreDir:           o.StoreDir,
		JetStreamMaxMemory: o.JetStreamMaxMemory,
		JetStreamMaxStore:  o.JetStreamMaxStore,
		MaxPayload:         o.MaxPayload,
		MaxPending:         o.MaxPending,
		Authorization:      o.Token,
		NoLog:              true,
		NoSigs:             true, // signals belong to the program that embeds the server
	}
	if o.Port == 0 {
		sopts.Port = server.RANDOM_PORT // the server's 0 means its default port, 4222
	}
	if o.ClusterPort != 0 {
		sopts.Cluster = server.ClusterOpts{Name: o.ClusterName, Host: orDefault(o.ClusterHost, host), Port: o.ClusterPort}
	}
	for _, r := range o.Routes {
		u, err := url.Parse(strings.TrimSpace(r))
		if err != nil || u.Host == "" || (u.Scheme != "nats-route" && u.Scheme != "nats") {
			return nil, fmt.Errorf("broker: bad route URL %q: want nats-route://host:port", r)
		}
		sopts.Routes = append(sopts.Routes, u)
	}
	if o.User != "" {
		sopts.Users = []*server.User{{Username: o.User, Password: o.Password}}
	}
	for _, k := range o.NKeys {
		sopts.Nkeys = append(sopts.Nkeys, &server.NkeyUser{Nkey: k})
	}
	if o.TLSConfig != nil {
		sopts.TLS = true
		sopts.TLSConfig = o.TLSConfig
		sopts.TLSVerify = o.TLSConfig.ClientAuth == tls.RequireAndVerifyClientCert
	}
	return sopts, nil
}

// ClientURL is the URL clients connect to, e.g. "nats://127.0.0.1:43123" ("tls://..." with TLS); "" when Port is -1.
func (e *Embedded) ClientURL() string {
	addr, ok := e.srv.Addr().(*net.TCPAddr)
	if !ok {
		return ""
	}
	scheme := "nats"
	if e.opts.TLSConfig != nil {
		scheme = "tls"
	}
	return scheme + "://" + dialAddr(e.opts.Host, addr.Port)
}

// ClusterURL is the route URL other servers list in their Routes, e.g. "nats-route://127.0.0.1:6222"; "" when the
// server has no route listener.
func (e *Embedded) ClusterURL() string {
	addr := e.srv.ClusterAddr()
	if addr == nil {
		return ""
	}
	return "nats-route://" + dialAddr(orDefault(e.opts.ClusterHost, e.opts.Host), addr.Port)
}

// dialAddr joins the host a listener binds with its port, replacing the default or a wildcard host by loopback:
// a listener on every interface is reachable there.
func dialAddr(host string, port int) string {
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// Server is the underlying nats-server, for what this package does not cover (monitoring, JetStream state).
func (e *Embedded) Server() *server.Server { return e.srv }

// Connect opens an in-process connection, which needs no client listener (it works with Port -1) and no TLS. It
// authenticates with the server's User/Password or Token and uses the defaults of Options; extra options win.
func (e *Embedded) Connect(extra ...nats.Option) (*nats.Conn, error) {
	opts, err := Options{User: e.opts.User, Password: e.opts.Password, Token: e.opts.Token}.NATSOptions()
	if err != nil {
		return nil, err
	}
	opts = append(append(opts, nats.InProcessServer(e.srv)), extra...)
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("broker: connect in-process to %s: %w", e.srv.Name(), err)
	}
	return nc, nil
}

// Shutdown stops the server, waits until it has stopped, and removes the store directory StartEmbedded created.
// It is idempotent and safe for concurrent use.
func (e *Embedded) Shutdown() {
	e.shutdown.Do(func() {
		e.srv.Shutdown()
		e.srv.WaitForShutdown()
		e.removeTempStore()
	})
}

func (e *Embedded) removeTempStore() {
	if e.tempStore != "" {
		os.RemoveAll(e.tempStore)
	}
}

// serverLog receives the server's log. The server reports some start-up failures (a port in use) only as a fatal
// log line, after which it would call os.Exit through its own logger; serverLog keeps the first one instead, so
// StartEmbedded returns it as an error at once rather than waiting out ReadyTimeout.
type serverLog struct {
	out server.Logger // nil: discard

	mu    sync.Mutex
	fatal error
}

func (l *serverLog) fatalErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fatal
}

func (l *serverLog) Fatalf(format string, v ...any) {
	l.mu.Lock()
	if l.fatal == nil {
		l.fatal = fmt.Errorf(format, v...)
	}
	l.mu.Unlock()
	if l.out != nil {
		l.out.Errorf(format, v...)
	}
}

func (l *serverLog) Noticef(format string, v ...any) { l.forward(server.Logger.Noticef, format, v) }
func (l *serverLog) Warnf(format string, v ...any)   { l.forward(server.Logger.Warnf, format, v) }
func (l *serverLog) Errorf(format string, v ...any)  { l.forward(server.Logger.Errorf, format, v) }
func (l *serverLog) Debugf(format string, v ...any)  { l.forward(server.Logger.Debugf, format, v) }
func (l *serverLog) Tracef(format string, v ...any)  { l.forward(server.Logger.Tracef, format, v) }

func (l *serverLog) forward(logf func(server.Logger, string, ...any), format string, v []any) {
	if l.out != nil {
		logf(l.out, format, v...)
	}
}
