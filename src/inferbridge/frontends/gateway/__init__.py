"""The Go gateway: REST and gRPC terminated in Go, answered by this process (see backend)."""
