package local

import (
	"bufio"
	"context"
	"encoding/binary"
	"reflect"
	"slices"
	"strings"
	"unsafe"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
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

// incomingKey is grpc-go's (unexported) context key of a call's incoming metadata,
// taken once from a context that metadata.NewIncomingContext made. With it a handler
// reads the transport's map in place: metadata.FromIncomingContext would copy the map
// for every call, and an InTapHandle costs grpc-go an allocation per call. nil when
// the context does not have the expected layout (a Go or grpc-go change; then the copy
// is used, and TestIncomingKey fails).
var incomingKey = findIncomingKey()

func findIncomingKey() any {
	probe := metadata.MD{"k": {"v"}}
	ctx := metadata.NewIncomingContext(context.Background(), probe)
	v := reflect.ValueOf(ctx)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil
	}
	f := v.Elem().FieldByName("key")
	if !f.IsValid() || f.Kind() != reflect.Interface || !f.CanAddr() {
		return nil
	}
	key := reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().Interface()
	if key == nil || !reflect.TypeOf(key).Comparable() {
		return nil
	}
	md, ok := ctx.Value(key).(metadata.MD)
	if !ok || len(md["k"]) != 1 || &md["k"][0] != &probe["k"][0] { // the same map, not a copy
		return nil
	}
	return key
}

// incomingMetadata is the call's incoming metadata, not to be modified.
func incomingMetadata(ctx context.Context) metadata.MD {
	if incomingKey != nil {
		md, _ := ctx.Value(incomingKey).(metadata.MD)
		return md
	}
	md, _ := metadata.FromIncomingContext(ctx)
	return md
}

// forwardedPairs returns md's forwarded entries as name, value pairs (nil when none),
// with the authenticated principal (when not "") as x-inferbridge-principal in its
// sorted place; a client's own x-inferbridge-principal is never forwarded.
func forwardedPairs(md metadata.MD, principal string) []string {
	var kv []string
	for _, key := range forwardedMetadata {
		for _, v := range md[key] {
			kv = append(kv, key, v)
		}
	}
	var names [8]string // room for the usual few x- keys without an allocation
	extensions := names[:0]
	for key := range md {
		if isForwardedExtension(key) && key != principalKey {
			extensions = append(extensions, key)
		}
	}
	if principal != "" {
		extensions = append(extensions, principalKey)
	}
	slices.Sort(extensions) // a map's order is random; the frame's is not
	for _, key := range extensions {
		if key == principalKey {
			kv = append(kv, key, principal)
			continue
		}
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

// callMetadata returns the forwarded metadata of a call as name, value pairs. It is
// nil, and allocates nothing, when the call carries none of the keys.
func callMetadata(ctx context.Context, principal string) ([]string, error) {
	kv := forwardedPairs(incomingMetadata(ctx), principal)
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
