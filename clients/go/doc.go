// Package inferbridge is the Go SDK for inferbridge and other Open Inference Protocol
// (KServe v2) servers, such as Triton.
//
// This package holds the transport-neutral types (tensors, requests, responses, metadata,
// errors) and the REST client, which uses only the standard library. The gRPC client lives
// in the grpcclient subpackage and implements the same Client interface, so code written
// against one transport runs unchanged over the other.
//
// Tensors carry their data as little-endian, row-major bytes (the wire format of both
// transports); the typed constructors (NewFP32, NewInt64, NewBytes, ...) build them from Go
// slices and the typed readers (Float32s, Int64s, ByteStrings, ...) read them back, checking
// the datatype and that the data fills the shape.
//
// Every call takes a context.Context. Its deadline travels to the server (the gRPC deadline,
// or Triton's "timeout" request parameter in microseconds over REST) and cancelling it
// abandons the call. Failures are *Error values that carry the HTTP status or gRPC code and
// the server's message, and match the sentinel errors with errors.Is:
//
//	if errors.Is(err, inferbridge.ErrNotFound) { ... }
//
// Triton's errors for the repository API have kinds of their own: ErrFailedPrecondition
// (REST 403, gRPC FAILED_PRECONDITION: the server's model control mode does not allow
// loading or unloading) and ErrAborted (409, ABORTED: the model is being loaded already).
//
// # Model repository and statistics
//
// Both clients speak Triton's repository and statistics extensions. A server started with
// --model-control-mode explicit loads and unloads models on request:
//
//	// A model of the server's repository:
//	err := client.LoadModel(ctx, "iris_onnx")
//	// Or one sent with the request (WithModelConfigValue marshals a Go value):
//	err = client.LoadModel(ctx, "iris_new", inferbridge.WithModelConfig(`{"runtime": "onnx"}`),
//		inferbridge.WithModelFiles(map[string][]byte{"1/model.onnx": onnx}))
//	index, err := client.RepositoryIndex(ctx, true) // the ready versions only
//	stats, err := client.ModelStatistics(ctx, "iris_onnx", "") // every version; "", "" = every model
//	fmt.Println(stats[0].InferenceCount, stats[0].InferenceStats.ComputeInfer.Mean())
//	err = client.UnloadModel(ctx, "iris_onnx", inferbridge.UnloadDependents())
//
// # Rollouts
//
// The REST client drives the server's progressive delivery (/v1/rollouts): shadow and
// canary steps, approval gates, automatic analysis and rollback, and the audit log.
//
//	rollout, err := client.StartRollout(ctx, "iris_onnx", inferbridge.RolloutSpec{
//		Candidate: 2,
//		Steps: []inferbridge.RolloutStep{
//			inferbridge.Shadow(10*time.Minute, 1.0),
//			inferbridge.Canary(5, 5*time.Minute),
//			inferbridge.Approval("qa", 1),
//			inferbridge.Canary(100, 5*time.Minute),
//		},
//		Analysis: &inferbridge.AnalysisSpec{Checks: []inferbridge.AnalysisCheck{
//			{ErrorRate: &inferbridge.ErrorRateCheck{Max: new(0.01), MaxRatioToBaseline: 2}},
//		}},
//	})
//	status, err := client.RolloutStatus(ctx, "iris_onnx") // phase, step, weights, analyses
//	_, err = client.ApproveRollout(ctx, "iris_onnx", "qa", "alice", "dashboards look fine")
//	events, err := client.RolloutHistory(ctx, "iris_onnx")
//
// A bad spec matches ErrInvalidArgument (HTTP 400), a model that is not loaded or has no
// rollout ErrNotFound (404), and a call the rollout's state refuses (a second rollout, a
// gate that is not waiting, an action on an ended rollout) ErrConflict (409).
//
// # TLS and credentials
//
// A server started with --tls-cert (or the pool gateway with listen.tls) speaks TLS only;
// with --tls-client-ca it also verifies client certificates. Both clients take a
// *tls.Config (WithTLS) or PEM files (WithTLSFiles: the CA to verify the server against,
// "" for the system's roots, and the client's certificate and key, "" for none), and a
// credential sent with every call: an API key (WithAPIKey, the x-api-key header or
// metadata) or a bearer token (WithBearerToken, a JWT or an API key):
//
//	rest, err := inferbridge.NewRESTClient("https://models.internal:8000",
//		inferbridge.WithTLSFiles("ca.pem", "client.pem", "client.key"), inferbridge.WithAPIKey(key))
//	grpc, err := grpcclient.New("models.internal:8001",
//		grpcclient.WithTLSFiles("ca.pem", "client.pem", "client.key"), grpcclient.WithBearerToken(jwt))
//
// Files that do not load make the constructor fail (ErrInvalidArgument). A missing or
// refused credential matches ErrUnauthenticated (REST 401, gRPC UNAUTHENTICATED); a
// principal whose scopes do not allow the call ErrPermissionDenied (gRPC
// PERMISSION_DENIED, and REST 403 with the server's "principal '...' may not ..."
// message: other REST 403s are Triton's ErrFailedPrecondition); over a rate limit
// ErrResourceExhausted, with the server's hint in Error.RetryAfter (REST Retry-After, gRPC
// retry-after trailer).
//
// # Trace propagation
//
// The separate module github.com/inferbridge/inferbridge/clients/go/otelib sends the
// caller's OpenTelemetry span context to the server as W3C traceparent and tracestate (an
// HTTP header, or gRPC metadata), so that the server's spans join the caller's trace. It is
// a module of its own so that this one does not depend on OpenTelemetry:
//
//	rest, _ := inferbridge.NewRESTClient(url, inferbridge.WithTransportMiddleware(otelib.Middleware()))
//	grpc, _ := grpcclient.New(addr, otelib.DialOption())
//	ctx, span := tracer.Start(ctx, "classify")
//	defer span.End()
//	resp, err := rest.Infer(ctx, req)
//
// WithTransportMiddleware takes any func(http.RoundTripper) http.RoundTripper, for other
// headers or metrics; grpcclient.New takes any grpc.DialOption.
//
// Clients are safe for concurrent use by many goroutines and reuse their connections; create
// one per server and share it.
package inferbridge
