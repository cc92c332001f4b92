package inferbridge

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Encoding selects how RESTClient.Infer carries tensors.
type Encoding int

const (
	// EncodingBinary uses Triton's binary tensor data extension in both directions: a JSON
	// header followed by the raw tensor bytes. It is the default, and the fastest.
	EncodingBinary Encoding = iota
	// EncodingJSON sends and receives tensors as JSON lists.
	EncodingJSON
)

// String names the encoding ("binary" or "json").
func (e Encoding) String() string {
	if e == EncodingJSON {
		return "json"
	}
	return "binary"
}

const headerLength = "Inference-Header-Content-Length"

// RESTClient talks to a server's REST front end (the OIP /v2 API and the seed
// shortcuts) with net/http only. It is safe for concurrent use and keeps connections alive
// between calls.
type RESTClient struct {
	base       string
	http       *http.Client
	encoding   Encoding
	middleware []func(http.RoundTripper) http.RoundTripper
	tls        *tls.Config
	// credentialHeader / credential: what WithAPIKey or WithBearerToken adds to requests.
	credentialHeader, credential string
	optionErr                    error // the first option that could not be applied
}

// RESTOption configures a RESTClient.
type RESTOption func(*RESTClient)

// WithHTTPClient makes the client send its requests through hc (for TLS, proxies or
// custom transports). The default client allows 1024 idle connections per host, so that
// many goroutines reuse connections instead of opening new ones.
func WithHTTPClient(hc *http.Client) RESTOption {
	return func(c *RESTClient) { c.http = hc }
}

// WithTransportMiddleware wraps the transport the client sends through (the default one,
// or that of WithHTTPClient's client, which is not modified) in wrap, to add headers,
// tracing or metrics to every request while keeping the connection pool. Several wrap in
// order: the first given is the outermost. The otelib module's Middleware is one, for
// OpenTelemetry trace propagation:
//
//	inferbridge.NewRESTClient(url, inferbridge.WithTransportMiddleware(otelib.Middleware()))
//
// A wrapper should pass CloseIdleConnections on to the transport it wraps, so that Close
// still closes the idle connections.
func WithTransportMiddleware(wrap func(http.RoundTripper) http.RoundTripper) RESTOption {
	return func(c *RESTClient) { c.middleware = append(c.middleware, wrap) }
}

// WithEncoding selects how Infer carries tensors (EncodingBinary by default).
func WithEncoding(e Encoding) RESTOption {
	return func(c *RESTClient) { c.encoding = e }
}

// NewRESTClient returns a client for the server at baseURL, such as
// "http://127.0.0.1:8000". It does not contact the server.
func NewRESTClient(baseURL string, opts ...RESTOption) (*RESTClient, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, clientError("new REST client", CodeInvalidArgument,
			fmt.Errorf("base URL %q must look like http://host:port", baseURL))
	}
	c := &RESTClient{base: strings.TrimRight(baseURL, "/")}
	for _, opt := range opts {
		if opt(c); c.optionErr != nil {
			return nil, clientError("new REST client", CodeInvalidArgument, c.optionErr)
		}
	}
	switch {
	case c.tls != nil && u.Scheme != "https":
		return nil, clientError("new REST client", CodeInvalidArgument,
			fmt.Errorf("TLS is configured but the base URL %q is not https://", baseURL))
	case c.tls != nil && c.http != nil:
		return nil, clientError("new REST client", CodeInvalidArgument,
			errors.New("WithTLS / WithTLSFiles and WithHTTPClient together: set the TLS configuration on that client's transport"))
	}
	if c.http == nil {
		transport := http.DefaultTransport.(*http.Transport).Clone()
		transport.MaxIdleConns = 1024
		transport.MaxIdleConnsPerHost = 1024
		if c.tls != nil {
			transport.TLSClientConfig = c.tls.Clone()
		}
		c.http = &http.Client{Transport: transport}
	}
	if len(c.middleware) > 0 {
		hc := *c.http
		rt := hc.Transport
		if rt == nil {
			rt = http.DefaultTransport
		}
		for i := len(c.middleware) - 1; i >= 0; i-- {
			rt = c.middleware[i](rt)
		}
		hc.Transport = rt
		c.http = &hc
	}
	return c, nil
}

// Encoding is the encoding Infer uses.
func (c *RESTClient) Encoding() Encoding { return c.encoding }

// Close closes the idle connections of the client's transport.
func (c *RESTClient) Close() error {
	c.http.CloseIdleConnections()
	return nil
}

// Live reports whether the server is live (GET /v2/health/live).
func (c *RESTClient) Live(ctx context.Context) (bool, error) {
	return c.health(ctx, "live", "/v2/health/live")
}

// Ready reports whether the server is ready (GET /v2/health/ready); a 503 answer is
// (false, nil).
func (c *RESTClient) Ready(ctx context.Context) (bool, error) {
	return c.health(ctx, "ready", "/v2/health/ready")
}

// ModelReady reports whether a model version ("" for the default) is ready; a 503 answer
// is (false, nil), and so is a model or version the server does not serve (404), as
// Triton answers ModelReady over gRPC.
func (c *RESTClient) ModelReady(ctx context.Context, model, version string) (bool, error) {
	ready, err := c.health(ctx, "model ready "+model, modelPath(model, version)+"/ready")
	var e *Error
	if errors.As(err, &e) && e.HTTPStatus == http.StatusNotFound {
		return false, nil // a model or version the server does not serve is not ready
	}
	return ready, err
}

func (c *RESTClient) health(ctx context.Context, op, path string) (bool, error) {
	status, _, _, err := c.do(ctx, op, http.MethodGet, path, nil, nil)
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.HTTPStatus == http.StatusServiceUnavailable {
			return false, nil
		}
		return false, err
	}
	return status == http.StatusOK, nil
}

// ServerMetadata describes the server (GET /v2).
func (c *RESTClient) ServerMetadata(ctx context.Context) (*ServerMetadata, error) {
	var m ServerMetadata
	if err := c.getJSON(ctx, "server metadata", "/v2", &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// ModelMetadata describes a model version, "" for the default (GET /v2/models/{m}).
func (c *RESTClient) ModelMetadata(ctx context.Context, model, version string) (*ModelMetadata, error) {
	var m ModelMetadata
	if err := c.getJSON(ctx, "model metadata "+model, modelPath(model, version), &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// Predict posts one feature row to POST /predict (the server's default model) and
// returns the predicted class as text.
func (c *RESTClient) Predict(ctx context.Context, features []float32) (string, error) {
	var out struct {
		Class json.RawMessage `json:"class"`
	}
	if err := c.postJSON(ctx, "predict", "/predict", features, &out); err != nil {
		return "", err
	}
	return classText(out.Class), nil
}

// PredictBatch posts several feature rows to POST /predict and returns one class per row.
func (c *RESTClient) PredictBatch(ctx context.Context, rows [][]float32) ([]string, error) {
	var out struct {
		Class []json.RawMessage `json:"class"`
	}
	if err := c.postJSON(ctx, "predict", "/predict", rows, &out); err != nil {
		return nil, err
	}
	classes := make([]string, len(out.Class))
	for i, raw := range out.Class {
		classes[i] = classText(raw)
	}
	return classes, nil
}

// PredictV1 calls the KServe v1 / TF Serving shortcut POST /v1/models/{model}:predict
// with {"instances": instances} and decodes its "predictions" into predictions (a pointer).
func (c *RESTClient) PredictV1(ctx context.Context, model string, instances, predictions any) error {
	out := struct {
		Predictions any `json:"predictions"`
	}{predictions}
	body := struct {
		Instances any `json:"instances"`
	}{instances}
	return c.postJSON(ctx, "predict "+model, "/v1/models/"+url.PathEscape(model)+":predict", body, &out)
}

func classText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(bytes.TrimSpace(raw))
}

// Infer runs one inference (POST /v2/models/{m}[/versions/{v}]/infer) with the client's
// encoding. The context's deadline is sent as the "timeout" parameter in microseconds.
func (c *RESTClient) Infer(ctx context.Context, req *InferRequest) (*InferResponse, error) {
	op := "infer"
	if req != nil {
		op = "infer " + req.Model
	}
	if err := ValidateRequest(req); err != nil {
		return nil, clientError(op, CodeInvalidArgument, err)
	}
	body, jsonLen, err := encodeRESTRequest(ctx, req, c.encoding)
	if errors.Is(err, context.DeadlineExceeded) {
		// The deadline has passed (the context may not have noticed yet): don't send.
		return nil, &Error{Op: op, Code: CodeDeadlineExceeded, Message: err.Error(), Err: err}
	}
	if err != nil {
		return nil, clientError(op, CodeInvalidArgument, err)
	}
	var headers map[string]string
	if jsonLen >= 0 {
		headers = map[string]string{headerLength: strconv.Itoa(jsonLen), "Content-Type": "application/octet-stream"}
	}
	_, respBody, respHeader, err := c.do(ctx, op, http.MethodPost, modelPath(req.Model, req.Version)+"/infer", body, headers)
	if err != nil {
		return nil, err
	}
	resp, err := decodeRESTResponse(respBody, respHeader.Get(headerLength))
	if err != nil {
		return nil, badResponse(op, err)
	}
	return resp, nil
}

type restTensor struct {
	Name       string          `json:"name"`
	Datatype   string          `json:"datatype"`
	Shape      []int64         `json:"shape"`
	Parameters map[string]any  `json:"parameters,omitempty"`
	Data       json.RawMessage `json:"data,omitempty"`
}

type restOutput struct {
	Name       string         `json:"name"`
	Parameters map[string]any `json:"parameters,omitempty"`
}

type restRequest struct {
	ID         string         `json:"id,omitempty"`
	Parameters map[string]any `json:"parameters,omitempty"`
	Inputs     []restTensor   `json:"inputs"`
	Outputs    []restOutput   `json:"outputs,omitempty"`
}

type restResponse struct {
	Model      string         `json:"model_name"`
	Version    string         `json:"model_version"`
	ID         string         `json:"id"`
	Parameters map[string]any `json:"parameters"`
	Outputs    []restTensor   `json:"outputs"`
}

// encodeRESTRequest builds the body; jsonLen is the JSON header's length for the binary
// encoding, -1 for plain JSON.
func encodeRESTRequest(ctx context.Context, req *InferRequest, enc Encoding) ([]byte, int, error) {
	doc := restRequest{ID: req.ID, Inputs: make([]restTensor, len(req.Inputs))}
	params := make(map[string]any, len(req.Parameters)+2)
	for k, v := range req.Parameters {
		params[k] = v
	}
	if deadline, ok := ctx.Deadline(); ok {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, 0, context.DeadlineExceeded
		}
		params["timeout"] = left.Microseconds()
	}
	binary := enc == EncodingBinary
	if binary && len(req.Outputs) == 0 {
		params["binary_data_output"] = true
	}
	if len(params) > 0 {
		doc.Parameters = params
	}
	for _, name := range req.Outputs {
		out := restOutput{Name: name}
		if binary {
			out.Parameters = map[string]any{"binary_data": true}
		}
		for k, v := range req.OutputParameters[name] {
			if out.Parameters == nil {
				out.Parameters = map[string]any{}
			}
			out.Parameters[k] = v
		}
		doc.Outputs = append(doc.Outputs, out)
	}
	rawSize := 0
	for i, t := range req.Inputs {
		rt := restTensor{Name: t.Name, Datatype: t.Datatype, Shape: nonNil(t.Shape)}
		tp := make(map[string]any, len(t.Parameters)+1)
		for k, v := range t.Parameters {
			tp[k] = v
		}
		switch {
		case t.InSharedMemory():
			// The parameters name the region; the body carries none of its bytes.
		case binary:
			tp["binary_data_size"] = len(t.Raw)
			rawSize += len(t.Raw)
		default:
			data, err := appendJSONData(nil, t)
			if err != nil {
				return nil, 0, err
			}
			rt.Data = data
		}
		if len(tp) > 0 {
			rt.Parameters = tp
		}
		doc.Inputs[i] = rt
	}
	header, err := json.Marshal(&doc)
	if err != nil {
		return nil, 0, err
	}
	if !binary {
		return header, -1, nil
	}
	body := make([]byte, 0, len(header)+rawSize)
	body = append(body, header...)
	for _, t := range req.Inputs {
		if !t.InSharedMemory() {
			body = append(body, t.Raw...)
		}
	}
	return body, len(header), nil
}

func nonNil(shape []int64) []int64 {
	if shape == nil {
		return []int64{}
	}
	return shape
}

func decodeRESTResponse(body []byte, lengthHeader string) (*InferResponse, error) {
	header, binaryPart := body, []byte(nil)
	if lengthHeader != "" {
		n, err := strconv.Atoi(lengthHeader)
		if err != nil || n < 0 || n > len(body) {
			return nil, fmt.Errorf("bad %s %q for a body of %d bytes", headerLength, lengthHeader, len(body))
		}
		header, binaryPart = body[:n], body[n:]
	}
	dec := json.NewDecoder(bytes.NewReader(header))
	dec.UseNumber()
	var doc restResponse
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("response is not OIP JSON: %w", err)
	}
	resp := &InferResponse{
		Model: doc.Model, Version: doc.Version, ID: doc.ID,
		Parameters: parametersFromJSON(doc.Parameters),
		Outputs:    make([]*Tensor, len(doc.Outputs)),
	}
	offset := 0
	for i, o := range doc.Outputs {
		params := parametersFromJSON(o.Parameters)
		t := &Tensor{Name: o.Name, Datatype: o.Datatype, Shape: nonNil(o.Shape)}
		if size, ok := params["binary_data_size"]; ok {
			n, ok := size.(int64)
			if !ok || n < 0 || int64(offset)+n > int64(len(binaryPart)) {
				return nil, fmt.Errorf("output %q: binary_data_size %v runs past the body", o.Name, size)
			}
			t.Raw = binaryPart[offset : offset+int(n) : offset+int(n)]
			offset += int(n)
			delete(params, "binary_data_size")
		} else if _, inRegion := params["shared_memory_region"]; !inRegion {
			// (An output written into the client's shared memory region has no data here.)
			raw, err := rawFromJSON(o.Name, o.Datatype, t.Shape, o.Data)
			if err != nil {
				return nil, err
			}
			t.Raw = raw
		}
		if len(params) > 0 {
			t.Parameters = params
		}
		if err := t.Validate(); err != nil {
			return nil, err
		}
		resp.Outputs[i] = t
	}
	return resp, nil
}

func modelPath(model, version string) string {
	p := "/v2/models/" + url.PathEscape(model)
	if version != "" {
		p += "/versions/" + url.PathEscape(version)
	}
	return p
}

func (c *RESTClient) getJSON(ctx context.Context, op, path string, out any) error {
	_, body, _, err := c.do(ctx, op, http.MethodGet, path, nil, nil)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, out); err != nil {
		return badResponse(op, err)
	}
	return nil
}

func (c *RESTClient) postJSON(ctx context.Context, op, path string, in, out any) error {
	payload, err := json.Marshal(in)
	if err != nil {
		return clientError(op, CodeInvalidArgument, err)
	}
	_, body, _, err := c.do(ctx, op, http.MethodPost, path, payload, nil)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, out); err != nil {
		return badResponse(op, err)
	}
	return nil
}

// do sends one request and reads the whole answer; any non-2xx status becomes an *Error
// carrying the server's {"error": msg}.
func (c *RESTClient) do(ctx context.Context, op, method, path string, body []byte, headers map[string]string) (int, []byte, http.Header, error) {
	var reader io.Reader
	if body != nil {
		reader = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, reader)
	if err != nil {
		return 0, nil, nil, clientError(op, CodeInvalidArgument, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	if c.credential != "" {
		req.Header.Set(c.credentialHeader, c.credential)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if cerr := contextError(ctx, op); cerr != nil {
			return 0, nil, nil, cerr
		}
		return 0, nil, nil, transportError(op, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		if cerr := contextError(ctx, op); cerr != nil {
			return 0, nil, nil, cerr
		}
		return 0, nil, nil, transportError(op, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp.StatusCode, data, resp.Header, nil
	}
	e := &Error{Op: op, Code: CodeFromHTTPStatus(resp.StatusCode), HTTPStatus: resp.StatusCode}
	defer func() {
		// An inferbridge server's refusal of a principal's scopes is 403 "principal '...'
		// may not ..." (docs/security.md); other 403s are Triton's repository answers.
		if resp.StatusCode == http.StatusForbidden && strings.HasPrefix(e.Message, "principal '") {
			e.Code = CodePermissionDenied
		}
	}()
	var doc struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(data, &doc) == nil && doc.Error != "" {
		e.Message = doc.Error
	} else {
		e.Message = strings.TrimSpace(string(data))
		if e.Message == "" {
			e.Message = http.StatusText(resp.StatusCode)
		}
	}
	if s := resp.Header.Get("Retry-After"); s != "" {
		if secs, err := strconv.Atoi(s); err == nil {
			e.RetryAfter = time.Duration(secs) * time.Second
		}
	}
	return resp.StatusCode, data, resp.Header, e
}

func transportError(op string, err error) *Error {
	code := CodeUnavailable
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		code = CodeDeadlineExceeded
	}
	return &Error{Op: op, Code: code, Message: err.Error(), Err: err}
}

func badResponse(op string, err error) *Error {
	return &Error{Op: op, Code: CodeInternal, Message: "malformed response: " + err.Error(), Err: err}
}

var _ Client = (*RESTClient)(nil)
