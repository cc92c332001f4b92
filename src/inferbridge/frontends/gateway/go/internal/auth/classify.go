package auth

import (
	"net/url"
	"strings"
	"unicode/utf8"
)

// Kind is what a request does, for authorization (docs/security.md, "What each
// request needs").
type Kind int

const (
	Health       Kind = iota // liveness, readiness: open while OpenHealth, else read
	Read                     // metadata, statistics, config, metrics: read
	Infer                    // inference on Action.Model: infer:<glob matching it>
	SharedMemory             // shared-memory registration and status: any infer: scope
	Admin                    // changes: admin
	Any                      // anything else: any valid credential
)

var kindNames = [...]string{"health", "read", "infer", "shared-memory", "admin", "any"}

func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Action is a classified request.
type Action struct {
	Kind  Kind
	Model string // the model of an Infer action
}

// serviceModels are the default models of the REST services (the Python REST app's
// services.DEFAULT_MODELS); ?model= picks another.
var serviceModels = map[[2]string]string{
	{"vision", "faces"}:    "face_detection",
	{"vision", "classify"}: "digits_classifier",
	{"vision", "detect"}:   "detection",
	{"text", "embed"}:      "text_embedding",
}

// ClassifyHTTP classifies a REST request by its method, decoded path and query the way
// the Python REST app routes it (inferbridge.frontends.rest.app: trailing slashes
// ignored, the path split at every '/'), so that what is authorized is what runs.
// Wrong methods on a known path get the path's kind (the app then answers 405).
// defaultModel is the model of POST /predict. Pass a query parsed by ParseQuery, which
// reads ?model= as the app does.
func ClassifyHTTP(method, path string, query url.Values, defaultModel string) Action {
	parts := strings.Split(strings.TrimRight(path, "/"), "/")[1:]
	if len(parts) > 0 && parts[0] == "v2" {
		return classifyV2(method, parts[1:])
	}
	switch {
	case len(parts) >= 2 && parts[0] == "v1" && parts[1] == "rollouts":
		return readOrAdmin(method)
	case len(parts) == 2 && parts[0] == "v1" && parts[1] == "rollout-audit":
		return Action{Kind: Read}
	case len(parts) == 1 && parts[0] == "predict":
		return Action{Kind: Infer, Model: defaultModel}
	case len(parts) == 1 && parts[0] == "metrics":
		return Action{Kind: Read}
	case len(parts) == 3 && parts[0] == "v1" && parts[1] == "models" && strings.HasSuffix(parts[2], ":predict"):
		return Action{Kind: Infer, Model: strings.TrimSuffix(parts[2], ":predict")}
	case len(parts) == 3 && parts[0] == "v1" && (parts[1] == "vision" || parts[1] == "text"):
		model, known := serviceModels[[2]string{parts[1], parts[2]}]
		if !known {
			return Action{Kind: Any} // the app answers 404, naming the services
		}
		if picked := lastValue(query, "model"); picked != "" {
			model = picked
		}
		return Action{Kind: Infer, Model: model}
	}
	return Action{Kind: Any}
}

func classifyV2(method string, parts []string) Action {
	if len(parts) == 0 {
		return Action{Kind: Read}
	}
	switch parts[0] {
	case "health":
		if len(parts) == 2 && (parts[1] == "live" || parts[1] == "ready") {
			return Action{Kind: Health}
		}
		return Action{Kind: Any}
	case "repository":
		switch {
		case len(parts) == 2 && parts[1] == "index":
			return Action{Kind: Read}
		case len(parts) == 4 && parts[1] == "models" && (parts[3] == "load" || parts[3] == "unload"):
			return Action{Kind: Admin}
		}
		return Action{Kind: Any}
	case "systemsharedmemory", "cudasharedmemory":
		return Action{Kind: SharedMemory}
	case "logging":
		if len(parts) == 1 {
			return readOrAdmin(method)
		}
	case "trace":
		if len(parts) == 2 && parts[1] == "setting" {
			return readOrAdmin(method)
		}
	case "models":
		if len(parts) == 2 && parts[1] == "stats" {
			return Action{Kind: Read}
		}
		if len(parts) < 2 {
			return Action{Kind: Any}
		}
		name, rest := parts[1], parts[2:]
		if len(rest) >= 2 && rest[0] == "versions" {
			rest = rest[2:]
		}
		if len(rest) == 0 {
			return Action{Kind: Read}
		}
		if len(rest) == 1 {
			switch rest[0] {
			case "ready", "config", "stats":
				return Action{Kind: Read}
			case "infer", "generate", "generate_stream":
				return Action{Kind: Infer, Model: name}
			}
		}
		// The app's extensions take what the model routes do not: a model's trace setting.
		if len(parts) == 4 && parts[2] == "trace" && parts[3] == "setting" {
			return readOrAdmin(method)
		}
	}
	return Action{Kind: Any}
}

// readOrAdmin is a settings resource: reading it (GET, the app's only reading method)
// needs read, anything else admin.
func readOrAdmin(method string) Action {
	if method == "GET" {
		return Action{Kind: Read}
	}
	return Action{Kind: Admin}
}

func lastValue(q url.Values, key string) string {
	if v := q[key]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}

// grpcKinds are the kinds of the forwarded gRPC methods that need no model.
var grpcKinds = map[string]Kind{
	"/inference.GRPCInferenceService/ServerLive":                   Health,
	"/inference.GRPCInferenceService/ServerReady":                  Health,
	"/inference.GRPCInferenceService/ServerMetadata":               Read,
	"/inference.GRPCInferenceService/ModelMetadata":                Read,
	"/inference.GRPCInferenceService/ModelReady":                   Read,
	"/inference.GRPCInferenceService/ModelConfig":                  Read,
	"/inference.GRPCInferenceService/ModelStatistics":              Read,
	"/inference.GRPCInferenceService/RepositoryIndex":              Read,
	"/inference.GRPCInferenceService/RepositoryModelLoad":          Admin,
	"/inference.GRPCInferenceService/RepositoryModelUnload":        Admin,
	"/inference.GRPCInferenceService/LogSettings":                  Admin,
	"/inference.GRPCInferenceService/TraceSetting":                 Admin,
	"/inference.GRPCInferenceService/SystemSharedMemoryStatus":     SharedMemory,
	"/inference.GRPCInferenceService/SystemSharedMemoryRegister":   SharedMemory,
	"/inference.GRPCInferenceService/SystemSharedMemoryUnregister": SharedMemory,
	"/inference.GRPCInferenceService/CudaSharedMemoryStatus":       SharedMemory,
	"/inference.GRPCInferenceService/CudaSharedMemoryRegister":     SharedMemory,
	"/inference.GRPCInferenceService/CudaSharedMemoryUnregister":   SharedMemory,
}

// Methods whose action is inference on a model.
const (
	GRPCModelInfer       = "/inference.GRPCInferenceService/ModelInfer"
	GRPCModelStreamInfer = "/inference.GRPCInferenceService/ModelStreamInfer"
	GRPCPredict          = "/ai.AIService/Predict" // the seed shortcut, on the default model
)

// ClassifyGRPC classifies a gRPC call by its full method name. model is the request's
// model_name for ModelInfer and ModelStreamInfer (each message), and the server's
// default model for AIService.Predict; it is ignored for the other methods.
func ClassifyGRPC(fullMethod, model string) Action {
	switch fullMethod {
	case GRPCModelInfer, GRPCModelStreamInfer, GRPCPredict:
		return Action{Kind: Infer, Model: model}
	}
	if k, ok := grpcKinds[fullMethod]; ok {
		return Action{Kind: k}
	}
	if strings.HasPrefix(fullMethod, "/grpc.health.v1.Health/") {
		return Action{Kind: Health}
	}
	return Action{Kind: Any} // reflection, unknown methods: any valid credential
}

// ParseQuery parses a raw query string the way the Python REST app does
// (urllib.parse.parse_qs on the query decoded as Latin-1): pairs split at '&' only (a
// ';' is part of a value), '+' is a space, an escape that is not %XX stays as written,
// escaped bytes are UTF-8 (an invalid sequence becomes U+FFFD), a raw byte of 0x80 or
// more is the Latin-1 character, and pairs without '=' or with an empty value are
// dropped (an empty name is kept). net/url differs on ';' and bad escapes, which would let ?model= name one
// model to the check and another to the app.
func ParseQuery(raw string) url.Values {
	q := url.Values{}
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		name, value, ok := strings.Cut(pair, "=")
		if !ok || value == "" {
			continue
		}
		name = pythonUnquote(name)
		q[name] = append(q[name], pythonUnquote(value))
	}
	return q
}

// pythonUnquote is urllib.parse.unquote_plus of a Latin-1-decoded string.
func pythonUnquote(s string) string {
	if !strings.ContainsAny(s, "%+") && isASCII(s) {
		return s
	}
	var out strings.Builder
	var pending []byte // the decoded bytes of the current ASCII run
	flush := func() {
		writeUTF8Replacing(&out, pending)
		pending = pending[:0]
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 0x80:
			flush()
			out.WriteRune(rune(c)) // Latin-1
		case c == '+':
			pending = append(pending, ' ')
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			pending = append(pending, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		default:
			pending = append(pending, c)
		}
	}
	flush()
	return out.String()
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// writeUTF8Replacing writes b as UTF-8, each maximal invalid subsequence replaced by one
// U+FFFD, as Python's decode("utf-8", "replace") does (strings.ToValidUTF8 replaces
// whole runs, utf8.DecodeRune single bytes).
func writeUTF8Replacing(out *strings.Builder, b []byte) {
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r == utf8.RuneError && size <= 1 {
			size = maximalSubpart(b)
			out.WriteRune(utf8.RuneError)
		} else {
			out.Write(b[:size])
		}
		b = b[size:]
	}
}

// maximalSubpart is the length of the invalid sequence at the start of b that Unicode's
// "maximal subpart" practice replaces by one U+FFFD: a lead byte and the continuation
// bytes that could still have completed it.
func maximalSubpart(b []byte) int {
	lo, hi := byte(0x80), byte(0xBF)
	var n int
	switch c := b[0]; {
	case c >= 0xC2 && c <= 0xDF:
		n = 2
	case c == 0xE0:
		n, lo = 3, 0xA0
	case c == 0xED:
		n, hi = 3, 0x9F
	case c >= 0xE1 && c <= 0xEF:
		n = 3
	case c == 0xF0:
		n, lo = 4, 0x90
	case c >= 0xF1 && c <= 0xF3:
		n = 4
	case c == 0xF4:
		n, hi = 4, 0x8F
	default:
		return 1
	}
	i := 1
	for ; i < n && i < len(b); i++ {
		x := b[i]
		if i == 1 && (x < lo || x > hi) || i > 1 && (x < 0x80 || x > 0xBF) {
			break
		}
	}
	return i
}
