package otelib_test

import (
	"context"
	"fmt"

	inferbridge "github.com/inferbridge/inferbridge/clients/go"
	"github.com/inferbridge/inferbridge/clients/go/grpcclient"
	"github.com/inferbridge/inferbridge/clients/go/otelib"
	"go.opentelemetry.io/otel"
)

// Both clients send the span context of each call's context to the server, which continues
// the trace.
func Example() {
	rest, err := inferbridge.NewRESTClient("http://127.0.0.1:8000", inferbridge.WithTransportMiddleware(otelib.Middleware()))
	if err != nil {
		panic(err)
	}
	grpc, err := grpcclient.New("127.0.0.1:8001", otelib.DialOption())
	if err != nil {
		panic(err)
	}
	defer grpc.Close()

	// The tracer comes from the application's tracer provider (the OpenTelemetry SDK).
	ctx, span := otel.Tracer("my-service").Start(context.Background(), "classify")
	defer span.End()
	ready, err := rest.ModelReady(ctx, "iris_onnx", "") // carries traceparent
	fmt.Println(ready, err)
}
