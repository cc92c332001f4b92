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
// Clients are safe for concurrent use by many goroutines and reuse their connections; create
// one per server and share it.
package inferbridge
