package local

import (
	"bufio"
	"context"
	"encoding/binary"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// forwardedMetadata lists the incoming gRPC metadata keys (lower-case) that a CALL
// frame carries to the backend, one entry per value, in this order. To forward a key,
// add it here (and to the package comment).
var forwardedMetadata = [...]string{
	"traceparent", // W3C Trace Context
	"tracestate",
	"baggage", // W3C Baggage
}

const maxMetadataEntries = 0xffff // meta_count is a u16

var errTooMuchMetadata = status.Error(codes.InvalidArgument,
	"inferbridge: too many trace metadata entries (over 65535)")

// callMetadata returns the forwarded metadata of a call as name, value pairs. It is
// nil, and allocates nothing, when the call carries none of the keys.
func callMetadata(ctx context.Context) ([]string, error) {
	var kv []string
	for _, key := range forwardedMetadata {
		for _, v := range metadata.ValueFromIncomingContext(ctx, key) {
			kv = append(kv, key, v)
		}
	}
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
