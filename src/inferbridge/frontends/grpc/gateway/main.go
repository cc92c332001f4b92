// Command inferbridge-grpc-gateway terminates gRPC for the inferbridge Python server.
//
// Python's grpcio costs too much CPU per unary call, so this small program does the
// HTTP/2 and gRPC framing, health, reflection, deadlines and cancellation, and forwards
// each call's raw request bytes to the Python server over an inherited Unix socket.
// Python keeps all the logic: decoding, validation, errors and the dataplane.
//
// Usage:
//
//	inferbridge-grpc-gateway --listen HOST:PORT --backend-fd 3 --max-recv-bytes N --max-concurrent-rpcs M
//
// At startup the gateway reads one DESCRIPTORS frame from the backend, listens on
// --listen (port 0 picks a free port; on failure it prints the reason on stderr and
// exits 2), prints exactly one line "listening HOST:PORT" on stdout and serves. The
// health status of "" starts as NOT_SERVING. It exits 0 after a SHUTDOWN frame has been
// handled and 1 when the backend socket fails or reaches EOF.
//
// # Backend protocol
//
// Both directions use the same framing, all integers little-endian:
//
//	u32 length (bytes after this field) | u8 kind | u64 id | body (length-9 bytes)
//
// Kinds:
//
//	1 CALL        gateway->backend, id = fresh call id (never 0).
//	              body = u16 method_len | method ("/pkg.Service/Method") |
//	              i64 timeout_us (time left to the client's deadline when forwarded, > 0;
//	              -1 = no deadline) | request message bytes (rest, possibly empty)
//	2 CANCEL      gateway->backend, id of a call the client cancelled or whose deadline
//	              passed before its REPLY; empty body. A REPLY may still follow and is ignored.
//	3 REPLY       backend->gateway, id of a call. body = u8 gRPC code | response message
//	              bytes if code == 0, else the UTF-8 error message. Unknown ids are ignored.
//	4 HEALTH      backend->gateway, id 0. body = u8 status (1 SERVING, 2 NOT_SERVING) |
//	              service name (rest; "" = the whole server).
//	5 SHUTDOWN    backend->gateway, id 0. body = u32 grace_ms. All health statuses become
//	              NOT_SERVING, the server stops gracefully (calls in flight still get their
//	              REPLYs) and is stopped hard after grace_ms; then the process exits 0.
//	6 DESCRIPTORS backend->gateway, id 0, first frame only. body = serialized
//	              google.protobuf.FileDescriptorSet of the forwarded services, for reflection.
//
// Every method that is not health or reflection is forwarded as a unary call, without
// filtering: the backend answers UNIMPLEMENTED for methods it does not know.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"

	_ "google.golang.org/grpc/encoding/gzip" // accept and answer gzip-compressed calls
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "gRPC listen address HOST:PORT (port 0 picks a free one)")
	backendFD := flag.Int("backend-fd", 3, "inherited, connected AF_UNIX SOCK_STREAM socket to the Python server")
	maxRecv := flag.Int("max-recv-bytes", 4<<20, "largest request message accepted, in bytes")
	maxRPCs := flag.Int("max-concurrent-rpcs", 0, "most forwarded calls in flight (0 = unlimited)")
	flag.Parse()
	if flag.NArg() != 0 || *maxRecv <= 0 || *maxRPCs < 0 {
		flag.Usage()
		os.Exit(2)
	}

	f := os.NewFile(uintptr(*backendFD), "backend")
	if f == nil {
		fatal(2, "invalid --backend-fd %d", *backendFD)
	}
	backend, err := net.FileConn(f)
	if err != nil {
		fatal(2, "--backend-fd %d: %v", *backendFD, err)
	}
	f.Close() // FileConn holds its own duplicate of the descriptor

	g, err := newGateway(backend, config{maxRecvBytes: *maxRecv, maxConcurrentRPCs: *maxRPCs})
	if err != nil {
		fatal(1, "%v", err)
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		fatal(2, "listen on %s: %v", *listen, err)
	}
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(out, "listening %s\n", lis.Addr())
	if err := out.Flush(); err != nil {
		fatal(1, "stdout: %v", err)
	}
	if err := g.run(lis); err != nil {
		fatal(1, "%v", err)
	}
}

func fatal(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "inferbridge-grpc-gateway: "+format+"\n", args...)
	os.Exit(code)
}
