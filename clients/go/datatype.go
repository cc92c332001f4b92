package inferbridge

// Datatype is an Open Inference Protocol tensor datatype name, such as "FP32".
type Datatype = string

// The Open Inference Protocol datatypes.
const (
	BOOL   Datatype = "BOOL"
	UINT8  Datatype = "UINT8"
	UINT16 Datatype = "UINT16"
	UINT32 Datatype = "UINT32"
	UINT64 Datatype = "UINT64"
	INT8   Datatype = "INT8"
	INT16  Datatype = "INT16"
	INT32  Datatype = "INT32"
	INT64  Datatype = "INT64"
	FP16   Datatype = "FP16"
	BF16   Datatype = "BF16"
	FP32   Datatype = "FP32"
	FP64   Datatype = "FP64"
	BYTES  Datatype = "BYTES"
)

// ElementSize is the size in bytes of one element of a fixed-size datatype; it is 0 for
// BYTES (variable-length elements) and -1 for a name that is not a datatype.
func ElementSize(dt Datatype) int {
	switch dt {
	case BOOL, UINT8, INT8:
		return 1
	case UINT16, INT16, FP16, BF16:
		return 2
	case UINT32, INT32, FP32:
		return 4
	case UINT64, INT64, FP64:
		return 8
	case BYTES:
		return 0
	}
	return -1
}
