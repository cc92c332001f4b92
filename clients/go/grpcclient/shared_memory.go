package grpcclient

import (
	"context"
	"sort"

	inferbridge "github.com/inferbridge/inferbridge/clients/go"
	"github.com/inferbridge/inferbridge/clients/go/inferencepb"
)

// RegisterSystemSharedMemory registers the region name: byteSize bytes at offset into the
// shared-memory object key (SystemSharedMemoryRegister). The errors are the REST client's:
// INVALID_ARGUMENT matches inferbridge.ErrInvalidArgument.
func (c *Client) RegisterSystemSharedMemory(ctx context.Context, name, key string, offset, byteSize uint64) error {
	op := "register system shared memory " + name
	_, err := c.inference.SystemSharedMemoryRegister(ctx, &inferencepb.SystemSharedMemoryRegisterRequest{
		Name: name, Key: key, Offset: offset, ByteSize: byteSize,
	})
	if err != nil {
		return wrap(ctx, op, err)
	}
	return nil
}

// SystemSharedMemoryStatus lists the registered regions by name, or only the region name
// when it is not "" (NOT_FOUND for an unknown one matches inferbridge.ErrNotFound).
func (c *Client) SystemSharedMemoryStatus(ctx context.Context, name string) ([]inferbridge.SharedMemoryRegion, error) {
	r, err := c.inference.SystemSharedMemoryStatus(ctx, &inferencepb.SystemSharedMemoryStatusRequest{Name: name})
	if err != nil {
		return nil, wrap(ctx, "system shared memory status", err)
	}
	regions := make([]inferbridge.SharedMemoryRegion, 0, len(r.GetRegions()))
	for _, s := range r.GetRegions() {
		regions = append(regions, inferbridge.SharedMemoryRegion{
			Name: s.GetName(), Key: s.GetKey(), Offset: s.GetOffset(), ByteSize: s.GetByteSize(),
		})
	}
	sort.Slice(regions, func(i, j int) bool { return regions[i].Name < regions[j].Name })
	return regions, nil
}

// UnregisterSystemSharedMemory unregisters the region name, or every region when name is
// "" (SystemSharedMemoryUnregister).
func (c *Client) UnregisterSystemSharedMemory(ctx context.Context, name string) error {
	_, err := c.inference.SystemSharedMemoryUnregister(ctx, &inferencepb.SystemSharedMemoryUnregisterRequest{Name: name})
	if err != nil {
		return wrap(ctx, "unregister system shared memory", err)
	}
	return nil
}

// LogSettings returns the server's log settings (LogSettings with no change).
func (c *Client) LogSettings(ctx context.Context) (*inferbridge.LogSettings, error) {
	return c.UpdateLogSettings(ctx, inferbridge.LogSettingsUpdate{})
}

// UpdateLogSettings changes the settings update names (LogSettings) and returns all of
// them as they are now; a refused value matches inferbridge.ErrInvalidArgument.
func (c *Client) UpdateLogSettings(ctx context.Context, update inferbridge.LogSettingsUpdate) (*inferbridge.LogSettings, error) {
	type value = inferencepb.LogSettingsRequest_SettingValue
	settings := map[string]*value{}
	for key, b := range map[string]*bool{"log_info": update.Info, "log_warning": update.Warning, "log_error": update.Error} {
		if b != nil {
			settings[key] = &value{ParameterChoice: &inferencepb.LogSettingsRequest_SettingValue_BoolParam{BoolParam: *b}}
		}
	}
	if update.VerboseLevel != nil {
		settings["log_verbose_level"] = &value{ParameterChoice: &inferencepb.LogSettingsRequest_SettingValue_Uint32Param{Uint32Param: *update.VerboseLevel}}
	}
	if update.Format != nil {
		settings["log_format"] = &value{ParameterChoice: &inferencepb.LogSettingsRequest_SettingValue_StringParam{StringParam: *update.Format}}
	}
	r, err := c.inference.LogSettings(ctx, &inferencepb.LogSettingsRequest{Settings: settings})
	if err != nil {
		return nil, wrap(ctx, "log settings", err)
	}
	got := r.GetSettings()
	return &inferbridge.LogSettings{
		File:         got["log_file"].GetStringParam(),
		Info:         got["log_info"].GetBoolParam(),
		Warning:      got["log_warning"].GetBoolParam(),
		Error:        got["log_error"].GetBoolParam(),
		VerboseLevel: got["log_verbose_level"].GetUint32Param(),
		Format:       got["log_format"].GetStringParam(),
	}, nil
}

// TraceSettings returns the trace settings in force for model, or the global ones when
// model is "" (TraceSetting with no change).
func (c *Client) TraceSettings(ctx context.Context, model string) (*inferbridge.TraceSettings, error) {
	return c.UpdateTraceSettings(ctx, model, nil)
}

// UpdateTraceSettings changes the settings named in changes for model, or globally when
// model is "" (TraceSetting); a nil value drops a model's own setting. The errors are the
// REST client's.
func (c *Client) UpdateTraceSettings(ctx context.Context, model string, changes map[string][]string) (*inferbridge.TraceSettings, error) {
	settings := make(map[string]*inferencepb.TraceSettingRequest_SettingValue, len(changes))
	for key, values := range changes {
		settings[key] = &inferencepb.TraceSettingRequest_SettingValue{Value: values}
	}
	r, err := c.inference.TraceSetting(ctx, &inferencepb.TraceSettingRequest{Settings: settings, ModelName: model})
	if err != nil {
		return nil, wrap(ctx, "trace settings", err)
	}
	values := make(map[string][]string, len(r.GetSettings()))
	for key, v := range r.GetSettings() {
		values[key] = v.GetValue()
	}
	return inferbridge.TraceSettingsFrom(values), nil
}
