// Command inferbridge-agent runs one node of an inferbridge fleet beside the node's
// inferbridge server: it registers the node with the control plane, heartbeats, receives
// its model assignments over a long poll, downloads and verifies artefacts, has the server
// load them, and answers diagnostics. See docs/fleet.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Config is the agent's configuration: a JSON file (--config) and flags over it.
type Config struct {
	ControlPlane   string            `json:"control_plane"`
	Server         string            `json:"server"`
	AdvertiseURL   string            `json:"advertise_url"`
	AdvertiseGRPC  string            `json:"advertise_grpc"`
	Repository     string            `json:"repository"`
	StateDir       string            `json:"state_dir"`
	Name           string            `json:"name"`
	Labels         map[string]string `json:"labels"`
	BootstrapToken string            `json:"bootstrap_token"`
	APIKeyFile     string            `json:"api_key_file"`
	ServerLog      string            `json:"server_log"`
	S3Endpoint     string            `json:"s3_endpoint"`
	Accelerators   []Accelerator     `json:"accelerators"`
	CPU            float64           `json:"cpu"`
	Memory         int64             `json:"memory"`
	Heartbeat      time.Duration     `json:"-"`
	Resync         time.Duration     `json:"-"`
	RetryAfter     time.Duration     `json:"-"`
	FiguresEvery   time.Duration     `json:"-"`
	TrimEvery      time.Duration     `json:"-"`
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func parseConfig(args []string) (Config, error) {
	fs := flag.NewFlagSet("inferbridge-agent", flag.ContinueOnError)
	configFile := fs.String("config", "", "JSON configuration file (flags override it)")
	controlPlane := fs.String("control-plane", "", "the control plane's URL (http://cp:9000)")
	server := fs.String("server", "", "the local inferbridge server (default http://127.0.0.1:8000)")
	advertise := fs.String("advertise-url", "", "the server's URL as the gateway reaches it (default --server)")
	advertiseGRPC := fs.String("advertise-grpc", "", "the server's gRPC address as the gateway reaches it, HOST:PORT (default none)")
	repository := fs.String("repository", "", "the server's model repository directory")
	stateDir := fs.String("state-dir", "", "the agent's own files (default REPOSITORY/../.inferbridge-agent-NAME)")
	name := fs.String("name", "", "node name (default the host name)")
	labels := fs.String("labels", "", "key=value,... labels")
	serverLog := fs.String("server-log", "", "the server's log file, for `fleet logs`")
	apiKeyFile := fs.String("api-key-file", "", "an API key with scope agent, sent as x-api-key to a control plane with --auth-keys (re-read when it changes)")
	s3Endpoint := fs.String("s3-endpoint", "", "S3 endpoint (default $AWS_ENDPOINT_URL, else AWS)")
	cpu := fs.Float64("cpu", 0, "CPU cores offered (default: all)")
	memory := fs.String("memory", "", "memory offered, e.g. 8Gi (default: all)")
	heartbeat := fs.Duration("heartbeat", time.Second, "heartbeat interval")
	resync := fs.Duration("resync", 5*time.Second, "how often the server's state is checked again")
	retry := fs.Duration("retry-after", 30*time.Second, "backoff before a failed artefact is tried again")
	figures := fs.Duration("figures-every", 10*time.Second, "how often server metrics and disk usage are read")
	trim := fs.Duration("trim-every", 10*time.Second, "drop the binary's pages from the resident set this often (0 = never)")
	// Above what the runtime holds at steady state (about 5 MiB once a download has grown
	// its metadata): a limit below it had the collector run dozens of times a second,
	// each run scanning every stack and keeping the runtime's tables resident.
	memLimit := fs.String("memory-limit", "16Mi", "Go soft memory limit (GOMEMLIMIT wins), a bound on a download's peak; GOGC keeps the steady state small")
	gcPercent := fs.Int("gc-percent", 50, "Go GC target percentage (GOGC, which overrides it; 0 = Go's default, 100); lower collects more often and holds a smaller heap")
	procs := fs.Int("gomaxprocs", 1, "threads running Go code at once (GOMAXPROCS, which overrides it; 0 = one per CPU)")
	var accelerators listFlag
	fs.Var(&accelerators, "accelerator", "type=T4,count=1,memory=16Gi (repeatable; replaces nvidia-smi's list)")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	cfg := Config{}
	if *configFile != "" {
		data, err := os.ReadFile(*configFile)
		if err != nil {
			return cfg, err
		}
		if err := json.Unmarshal(data, &cfg); err != nil {
			return cfg, fmt.Errorf("%s: %w", *configFile, err)
		}
	}
	override := func(target *string, value string) {
		if value != "" {
			*target = value
		}
	}
	override(&cfg.ControlPlane, *controlPlane)
	override(&cfg.Server, *server)
	override(&cfg.AdvertiseURL, *advertise)
	override(&cfg.AdvertiseGRPC, *advertiseGRPC)
	override(&cfg.Repository, *repository)
	override(&cfg.StateDir, *stateDir)
	override(&cfg.Name, *name)
	override(&cfg.ServerLog, *serverLog)
	override(&cfg.APIKeyFile, *apiKeyFile)
	override(&cfg.S3Endpoint, *s3Endpoint)
	override(&cfg.BootstrapToken, os.Getenv("INFERBRIDGE_FLEET_BOOTSTRAP_TOKEN"))
	if *labels != "" {
		cfg.Labels = map[string]string{}
		for _, part := range strings.Split(*labels, ",") {
			k, v, ok := strings.Cut(part, "=")
			if !ok {
				return cfg, fmt.Errorf("--labels: %q is not key=value", part)
			}
			cfg.Labels[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	for _, text := range accelerators {
		a, err := parseAccelerator(text)
		if err != nil {
			return cfg, err
		}
		cfg.Accelerators = append(cfg.Accelerators, a)
	}
	if *cpu > 0 {
		cfg.CPU = *cpu
	}
	if *memory != "" {
		n, err := parseBytes(*memory)
		if err != nil {
			return cfg, fmt.Errorf("--memory: %w", err)
		}
		cfg.Memory = n
	}
	cfg.Heartbeat, cfg.Resync, cfg.RetryAfter, cfg.FiguresEvery = *heartbeat, *resync, *retry, *figures
	cfg.TrimEvery = *trim
	if cfg.Server == "" {
		cfg.Server = "http://127.0.0.1:8000"
	}
	if cfg.AdvertiseURL == "" {
		cfg.AdvertiseURL = cfg.Server
	}
	if cfg.AdvertiseGRPC != "" {
		if err := checkHostPort(cfg.AdvertiseGRPC); err != nil {
			return cfg, fmt.Errorf("--advertise-grpc: %w", err)
		}
	}
	if cfg.Name == "" {
		host, err := os.Hostname()
		if err != nil {
			return cfg, err
		}
		cfg.Name = host
	}
	if cfg.ControlPlane == "" || cfg.Repository == "" {
		return cfg, fmt.Errorf("--control-plane and --repository are required")
	}
	if cfg.StateDir == "" {
		cfg.StateDir = strings.TrimRight(cfg.Repository, "/") + "/../.inferbridge-agent-" + cfg.Name
	}
	if cfg.TrimEvery < 0 {
		return cfg, fmt.Errorf("--trim-every must not be negative")
	}
	if cfg.Heartbeat <= 0 || cfg.Resync <= 0 {
		return cfg, fmt.Errorf("--heartbeat and --resync must be positive")
	}
	if *memLimit != "" && os.Getenv("GOMEMLIMIT") == "" {
		n, err := parseBytes(*memLimit)
		if err != nil {
			return cfg, fmt.Errorf("--memory-limit: %w", err)
		}
		debug.SetMemoryLimit(n)
	}
	// The agent's work is I/O and one download at a time: one P is enough, and each
	// further P costs its own caches and an extra thread.
	if os.Getenv("GOMAXPROCS") == "" && *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}
	if os.Getenv("GOGC") == "" && *gcPercent > 0 {
		debug.SetGCPercent(*gcPercent)
	}
	return cfg, nil
}

// checkHostPort accepts HOST:PORT (a name, an IPv4 address or a bracketed IPv6 one, and
// a port 1-65535): the form a gRPC client dials, with no scheme or path.
func checkHostPort(address string) error {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("%q is not HOST:PORT (e.g. 10.0.0.5:8001): %v", address, err)
	}
	if host == "" || strings.ContainsAny(host, "/ \t@?#") {
		return fmt.Errorf("%q is not HOST:PORT (e.g. 10.0.0.5:8001): bad host %q", address, host)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q is not HOST:PORT (e.g. 10.0.0.5:8001): the port must be 1-65535, not %q", address, port)
	}
	return nil
}

func main() {
	cfg, err := parseConfig(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "inferbridge-agent:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("node", cfg.Name)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Info("agent starting", "control_plane", cfg.ControlPlane, "server", cfg.Server,
		"repository", cfg.Repository, "state_dir", cfg.StateDir, "heartbeat", cfg.Heartbeat)
	if err := NewAgent(cfg, log).Run(ctx); err != nil {
		log.Error("agent failed", "error", err)
		os.Exit(1)
	}
}
