package inferbridge

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
)

// SharedMemoryRegion is a registered system shared-memory region (Triton's system shared
// memory extension): a window of ByteSize bytes at Offset into the POSIX shared-memory
// object Key ("/name", the file /dev/shm/name on Linux). Inputs and outputs name it in
// their "shared_memory_region", "shared_memory_byte_size" and "shared_memory_offset"
// parameters instead of carrying their bytes; the server reads and writes it in place.
type SharedMemoryRegion struct {
	// Name is the region's name, as the tensors' parameters use it.
	Name string `json:"name"`
	// Key is the shared-memory object's POSIX name.
	Key string `json:"key"`
	// Offset is where the region starts in the object, in bytes.
	Offset uint64 `json:"offset"`
	// ByteSize is the region's size in bytes.
	ByteSize uint64 `json:"byte_size"`
}

// LogSettings are the server's log settings (Triton's logging extension: GET /v2/logging,
// or LogSettings over gRPC).
type LogSettings struct {
	// File is where the log goes; "" is stderr (inferbridge cannot change it at run time).
	File string `json:"log_file"`
	// Info, Warning and Error say whether records of those levels are written.
	Info    bool `json:"log_info"`
	Warning bool `json:"log_warning"`
	Error   bool `json:"log_error"`
	// VerboseLevel above 0 writes verbose (debug) records.
	VerboseLevel uint32 `json:"log_verbose_level"`
	// Format is "default", "ISO8601" or (inferbridge) "json".
	Format string `json:"log_format"`
}

// LogSettingsUpdate names the log settings to change; nil fields stay as they are.
type LogSettingsUpdate struct {
	Info         *bool   `json:"log_info,omitempty"`
	Warning      *bool   `json:"log_warning,omitempty"`
	Error        *bool   `json:"log_error,omitempty"`
	VerboseLevel *uint32 `json:"log_verbose_level,omitempty"`
	Format       *string `json:"log_format,omitempty"`
}

// RegisterSystemSharedMemory registers the region name: byteSize bytes at offset into the
// shared-memory object key (POST /v2/systemsharedmemory/region/{name}/register). A name
// already registered, an unknown key or a window beyond the object's end is an error
// matching ErrInvalidArgument.
func (c *RESTClient) RegisterSystemSharedMemory(ctx context.Context, name, key string, offset, byteSize uint64) error {
	op := "register system shared memory " + name
	if name == "" {
		return clientError(op, CodeInvalidArgument, errors.New("no region name"))
	}
	body, err := json.Marshal(map[string]any{"key": key, "offset": offset, "byte_size": byteSize})
	if err != nil {
		return clientError(op, CodeInvalidArgument, err)
	}
	_, _, _, err = c.do(ctx, op, http.MethodPost, sharedMemoryPath(name)+"/register", body, nil)
	return err
}

// SystemSharedMemoryStatus lists the registered regions, or only the region name when it
// is not "" (an unknown name matches ErrNotFound).
func (c *RESTClient) SystemSharedMemoryStatus(ctx context.Context, name string) ([]SharedMemoryRegion, error) {
	var regions []SharedMemoryRegion
	if err := c.getJSON(ctx, "system shared memory status", sharedMemoryPath(name)+"/status", &regions); err != nil {
		return nil, err
	}
	return regions, nil
}

// UnregisterSystemSharedMemory unregisters the region name, or every region when name is
// "" (an unknown name matches ErrNotFound).
func (c *RESTClient) UnregisterSystemSharedMemory(ctx context.Context, name string) error {
	_, _, _, err := c.do(ctx, "unregister system shared memory", http.MethodPost, sharedMemoryPath(name)+"/unregister", nil, nil)
	return err
}

// LogSettings returns the server's log settings (GET /v2/logging).
func (c *RESTClient) LogSettings(ctx context.Context) (*LogSettings, error) {
	var settings LogSettings
	if err := c.getJSON(ctx, "log settings", "/v2/logging", &settings); err != nil {
		return nil, err
	}
	return &settings, nil
}

// UpdateLogSettings changes the settings update names (POST /v2/logging) and returns all
// of them as they are now. A value the server refuses matches ErrInvalidArgument, and then
// nothing was changed.
func (c *RESTClient) UpdateLogSettings(ctx context.Context, update LogSettingsUpdate) (*LogSettings, error) {
	var settings LogSettings
	if err := c.postJSON(ctx, "update log settings", "/v2/logging", update, &settings); err != nil {
		return nil, err
	}
	return &settings, nil
}

func sharedMemoryPath(name string) string {
	if name == "" {
		return "/v2/systemsharedmemory"
	}
	return "/v2/systemsharedmemory/region/" + url.PathEscape(name)
}

// Parameter names of Triton's shared memory extensions.
const (
	ParamSharedMemoryRegion   = "shared_memory_region"
	ParamSharedMemoryByteSize = "shared_memory_byte_size"
	ParamSharedMemoryOffset   = "shared_memory_offset"
)

// NewSharedMemoryTensor is an input whose byteSize bytes of data are at offset in the
// registered region (written there by the caller: little-endian, row-major, BYTES with
// 4-byte lengths); the request carries none of them.
func NewSharedMemoryTensor(name string, datatype Datatype, shape []int64, region string, byteSize, offset uint64) *Tensor {
	return &Tensor{Name: name, Datatype: datatype, Shape: shape, Parameters: sharedMemoryParameters(region, byteSize, offset)}
}

// InSharedMemory reports whether the tensor's data is in a shared memory region (its
// parameters name one) instead of in Raw: an input sent so, or an output the server wrote
// into the region (its Raw is then empty; read the region).
func (t *Tensor) InSharedMemory() bool {
	if t == nil {
		return false
	}
	_, ok := t.Parameters[ParamSharedMemoryRegion]
	return ok
}

// OutputToSharedMemory asks for the output name (adding it to Outputs if missing) to be
// written into the registered region, byteSize bytes at offset, instead of the response.
func (r *InferRequest) OutputToSharedMemory(name, region string, byteSize, offset uint64) {
	found := false
	for _, o := range r.Outputs {
		found = found || o == name
	}
	if !found {
		r.Outputs = append(r.Outputs, name)
	}
	if r.OutputParameters == nil {
		r.OutputParameters = map[string]Parameters{}
	}
	params := r.OutputParameters[name]
	if params == nil {
		params = Parameters{}
		r.OutputParameters[name] = params
	}
	for k, v := range sharedMemoryParameters(region, byteSize, offset) {
		params[k] = v
	}
}

func sharedMemoryParameters(region string, byteSize, offset uint64) Parameters {
	return Parameters{
		ParamSharedMemoryRegion:   region,
		ParamSharedMemoryByteSize: int64(byteSize),
		ParamSharedMemoryOffset:   int64(offset),
	}
}
