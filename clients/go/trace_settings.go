package inferbridge

import (
	"context"
	"encoding/json"
	"net/url"
)

// TraceSettings are the server's trace settings (Triton's trace extension: GET
// /v2[/models/{m}]/trace/setting, or TraceSetting over gRPC), as Triton spells them: every
// value is text, the level a list.
type TraceSettings struct {
	// Level is ["OFF"] or ["TIMESTAMPS"].
	Level []string
	// Rate is one trace in every Rate requests ("1000").
	Rate string
	// Count is how many more traces may start ("-1": no limit).
	Count string
	// LogFrequency, File and Mode are Triton's file-trace settings; inferbridge exports
	// OpenTelemetry spans and answers "0", "" and "opentelemetry".
	LogFrequency string
	File         string
	Mode         string
}

// TraceSettingsFrom reads settings keyed as Triton names them, each value a list of
// strings (what TraceSetting answers over gRPC).
func TraceSettingsFrom(values map[string][]string) *TraceSettings {
	first := func(key string) string {
		if v := values[key]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	return &TraceSettings{
		Level: values["trace_level"], Rate: first("trace_rate"), Count: first("trace_count"),
		LogFrequency: first("log_frequency"), File: first("trace_file"), Mode: first("trace_mode"),
	}
}

// TraceSettings returns the trace settings in force for model, or the global ones when
// model is "".
func (c *RESTClient) TraceSettings(ctx context.Context, model string) (*TraceSettings, error) {
	var doc map[string]any
	if err := c.getJSON(ctx, "trace settings", traceSettingsPath(model), &doc); err != nil {
		return nil, err
	}
	return TraceSettingsFrom(stringLists(doc)), nil
}

// UpdateTraceSettings changes the settings named in changes (Triton's keys: "trace_level",
// "trace_rate", "trace_count", ...; a nil value drops a model's own setting) for model, or
// globally when model is "", and returns the settings now in force. A refused key or value
// matches ErrInvalidArgument, and then nothing was changed.
func (c *RESTClient) UpdateTraceSettings(ctx context.Context, model string, changes map[string][]string) (*TraceSettings, error) {
	body := make(map[string]any, len(changes))
	for key, values := range changes {
		switch {
		case values == nil:
			body[key] = nil
		case key == "trace_level":
			body[key] = values
		case len(values) == 1:
			body[key] = values[0]
		default:
			body[key] = values
		}
	}
	var doc map[string]any
	if err := c.postJSON(ctx, "update trace settings", traceSettingsPath(model), body, &doc); err != nil {
		return nil, err
	}
	return TraceSettingsFrom(stringLists(doc)), nil
}

func traceSettingsPath(model string) string {
	if model == "" {
		return "/v2/trace/setting"
	}
	return "/v2/models/" + url.PathEscape(model) + "/trace/setting"
}

// stringLists turns a REST trace settings answer (strings and lists of strings) into lists.
func stringLists(doc map[string]any) map[string][]string {
	out := make(map[string][]string, len(doc))
	for key, value := range doc {
		switch v := value.(type) {
		case string:
			out[key] = []string{v}
		case []any:
			for _, item := range v {
				if s, ok := item.(string); ok {
					out[key] = append(out[key], s)
				}
			}
		default:
			if raw, err := json.Marshal(v); err == nil {
				out[key] = []string{string(raw)}
			}
		}
	}
	return out
}
