package inferbridge

import "time"

// StatisticDuration is a cumulative count of events and their total time (Triton's
// statistics extension).
type StatisticDuration struct {
	// Count is the number of events.
	Count uint64 `json:"count"`
	// Ns is their total duration in nanoseconds.
	Ns uint64 `json:"ns"`
}

// Total is the total duration.
func (d StatisticDuration) Total() time.Duration { return time.Duration(d.Ns) }

// Mean is the average duration of one event, 0 when there were none.
func (d StatisticDuration) Mean() time.Duration {
	if d.Count == 0 {
		return 0
	}
	return time.Duration(d.Ns / d.Count)
}

// InferStatistics are a model version's cumulative request statistics. Success, Fail,
// Queue and the Compute* durations count requests; a batched execution serves several.
type InferStatistics struct {
	// Success counts the requests that succeeded, with their total time end to end.
	Success StatisticDuration `json:"success"`
	// Fail counts the requests that failed, with the time they took.
	Fail StatisticDuration `json:"fail"`
	// Queue is the time requests waited before their execution started.
	Queue StatisticDuration `json:"queue"`
	// ComputeInput is the time spent preparing inputs.
	ComputeInput StatisticDuration `json:"compute_input"`
	// ComputeInfer is the time spent running the model.
	ComputeInfer StatisticDuration `json:"compute_infer"`
	// ComputeOutput is the time spent extracting outputs.
	ComputeOutput StatisticDuration `json:"compute_output"`
	// CacheHit counts the requests answered from the response cache.
	CacheHit StatisticDuration `json:"cache_hit"`
	// CacheMiss counts the requests the response cache could not answer.
	CacheMiss StatisticDuration `json:"cache_miss"`
}

// InferBatchStatistics are the execution statistics of one batch size; each count is of
// executions, not requests.
type InferBatchStatistics struct {
	// BatchSize is the batch size these executions ran with.
	BatchSize uint64 `json:"batch_size"`
	// ComputeInput is the time spent preparing inputs.
	ComputeInput StatisticDuration `json:"compute_input"`
	// ComputeInfer is the time spent running the model.
	ComputeInfer StatisticDuration `json:"compute_infer"`
	// ComputeOutput is the time spent extracting outputs.
	ComputeOutput StatisticDuration `json:"compute_output"`
}

// MemoryUsage is memory a model version holds.
type MemoryUsage struct {
	// Type is the kind of memory, such as "CPU" or "GPU".
	Type string `json:"type"`
	// ID is the device id.
	ID int64 `json:"id"`
	// ByteSize is the number of bytes held.
	ByteSize uint64 `json:"byte_size"`
}

// ModelStatistics are one model version's cumulative statistics (Triton's statistics
// extension: GET /v2/models[/{m}[/versions/{v}]]/stats, or ModelStatistics over gRPC).
type ModelStatistics struct {
	// Name is the model's name.
	Name string `json:"name"`
	// Version is the model version.
	Version string `json:"version"`
	// LastInference is when the last inference request was made, in milliseconds since
	// the Unix epoch; 0 when there was none.
	LastInference uint64 `json:"last_inference"`
	// InferenceCount counts the inferences performed; a batch of n counts n.
	InferenceCount uint64 `json:"inference_count"`
	// ExecutionCount counts the model executions; a batch counts one.
	ExecutionCount uint64 `json:"execution_count"`
	// InferenceStats are the request statistics.
	InferenceStats InferStatistics `json:"inference_stats"`
	// BatchStats are the execution statistics per batch size.
	BatchStats []InferBatchStatistics `json:"batch_stats"`
	// MemoryUsage is the memory the version holds, where the server reports it.
	MemoryUsage []MemoryUsage `json:"memory_usage,omitempty"`
}

// LastInferenceTime is LastInference as a time.Time; the zero Time when there was none.
func (s ModelStatistics) LastInferenceTime() time.Time {
	if s.LastInference == 0 {
		return time.Time{}
	}
	return time.UnixMilli(int64(s.LastInference))
}
