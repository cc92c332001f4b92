package local

import (
	"bufio"
	"context"
	"encoding/binary"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

// forwardedMetadata lists the incoming gRPC metadata keys (lower-case) that a CALL
// frame carries to the backend first, one entry per value, in this order. After them
// come the keys starting with "x-" (not binary "-bin" ones), sorted by name: a rollout
// can route by one (route_key header:<name>). To forward another key, add it here (and
// to the package comment).
var forwardedMetadata = [...]string{
	"traceparent", // W3C Trace Context
	"tracestate",
	"baggage", // W3C Baggage
}

const maxMetadataEntries = 0xffff // meta_count is a u16

var errTooMuchMetadata = status.Error(codes.InvalidArgument,
	"inferbridge: too many forwarded metadata entries (over 65535)")

// forwardedKey is the context key of a call's forwarded metadata (set by tapMetadata).
type forwardedKey struct{}

// tapMetadata is the gRPC server's InTapHandle: it picks a call's forwarded metadata
// out of its headers as they arrive, reading the transport's map in place (getting it
// from the handler's context, metadata.FromIncomingContext, would copy the map for
// every call). A call with nothing to forward keeps its context: no allocation.
func tapMetadata(ctx context.Context, info *tap.Info) (context.Context, error) {
	if kv := forwardedPairs(info.Header); kv != nil {
		return context.WithValue(ctx, forwardedKey{}, kv), nil
	}
	return ctx, nil
}

// forwardedPairs returns md's forwarded entries as name, value pairs (nil when none).
func forwardedPairs(md metadata.MD) []string {
	var kv []string
	for _, key := range forwardedMetadata {
		for _, v := range md[key] {
			kv = append(kv, key, v)
		}
	}
	var extensions []string
	for key := range md {
		if isForwardedExtension(key) {
			extensions = append(extensions, key)
		}
	}
	slices.Sort(extensions) // a map's order is random; the frame's is not
	for _, key := range extensions {
		for _, v := range md[key] {
			kv = append(kv, key, v)
		}
	}
	return kv
}

// isForwardedExtension tells the "x-" keys that are forwarded: not binary ones.
func isForwardedExtension(key string) bool {
	return len(key) > 2 && key[0] == 'x' && key[1] == '-' && !strings.HasSuffix(key, "-bin")
}

// callMetadata returns the forwarded metadata of a call as name, value pairs (nil when
// the call carries none of the keys), as tapMetadata found them.
func callMetadata(ctx context.Context) ([]string, error) {
	kv, _ := ctx.Value(forwardedKey{}).([]string)
	if len(kv)/2 > maxMetadataEntries {
		return nil, errTooMuchMetadata
	}
	return kv, nil
}

// metadataLen is the encoded size of kv: u16 count | count × (u16 name_len | name |
// u32 value_len | value).
func metadataLen(kv []string) int {
	n := 2
	for i := 0; i < len(kv); i += 2 {
		n += 2 + len(kv[i]) + 4 + len(kv[i+1])
	}
	return n
}

func writeMetadata(bw *bufio.Writer, scratch []byte, kv []string) {
	binary.LittleEndian.PutUint16(scratch, uint16(len(kv)/2))
	bw.Write(scratch[:2])
	for i := 0; i < len(kv); i += 2 {
		binary.LittleEndian.PutUint16(scratch, uint16(len(kv[i])))
		bw.Write(scratch[:2])
		bw.WriteString(kv[i])
		binary.LittleEndian.PutUint32(scratch, uint32(len(kv[i+1])))
		bw.Write(scratch[:4])
		bw.WriteString(kv[i+1])
	}
}
