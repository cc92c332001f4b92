package local

import "strings"

// Route templates: the `route` label of inferbridge_frontend_requests_total. A label
// never carries a raw path or an unknown method name, so that its cardinality stays
// bounded whatever clients send.

// httpRoute indexes httpRouteNames.
type httpRoute uint8

const (
	routeOther httpRoute = iota
	routeV2
	routeHealthLive
	routeHealthReady
	routeModelsStats
	routeRepositoryIndex
	routeRepositoryLoad
	routeRepositoryUnload
	routeModel
	routeModelReady
	routeModelConfig
	routeModelStats
	routeModelInfer
	routeVersion
	routeVersionReady
	routeVersionConfig
	routeVersionStats
	routeVersionInfer
	routeModelGenerate
	routeModelGenerateStream
	routeVersionGenerate
	routeVersionGenerateStream
	routeMetrics
	routePredict
	routeV1Predict
	routeV1Vision
	routeV1Text
	routeLogging
	routeTraceSetting
	routeModelTraceSetting
	routeSystemShmStatus
	routeSystemShmRegionStatus
	routeSystemShmRegister
	routeSystemShmRegionRegister
	routeSystemShmUnregister
	routeSystemShmRegionUnregister
	routeCudaShmStatus
	routeCudaShmRegionStatus
	routeCudaShmRegister
	routeCudaShmRegionRegister
	routeCudaShmUnregister
	routeCudaShmRegionUnregister
	numHTTPRoutes
)

var httpRouteNames = [numHTTPRoutes]string{
	routeOther:                     "other",
	routeV2:                        "/v2",
	routeHealthLive:                "/v2/health/live",
	routeHealthReady:               "/v2/health/ready",
	routeModelsStats:               "/v2/models/stats",
	routeRepositoryIndex:           "/v2/repository/index",
	routeRepositoryLoad:            "/v2/repository/models/{model}/load",
	routeRepositoryUnload:          "/v2/repository/models/{model}/unload",
	routeModel:                     "/v2/models/{model}",
	routeModelReady:                "/v2/models/{model}/ready",
	routeModelConfig:               "/v2/models/{model}/config",
	routeModelStats:                "/v2/models/{model}/stats",
	routeModelInfer:                "/v2/models/{model}/infer",
	routeVersion:                   "/v2/models/{model}/versions/{version}",
	routeVersionReady:              "/v2/models/{model}/versions/{version}/ready",
	routeVersionConfig:             "/v2/models/{model}/versions/{version}/config",
	routeVersionStats:              "/v2/models/{model}/versions/{version}/stats",
	routeVersionInfer:              "/v2/models/{model}/versions/{version}/infer",
	routeModelGenerate:             "/v2/models/{model}/generate",
	routeModelGenerateStream:       "/v2/models/{model}/generate_stream",
	routeVersionGenerate:           "/v2/models/{model}/versions/{version}/generate",
	routeVersionGenerateStream:     "/v2/models/{model}/versions/{version}/generate_stream",
	routeMetrics:                   "/metrics",
	routePredict:                   "/predict",
	routeV1Predict:                 "/v1/models/{model}:predict",
	routeV1Vision:                  "/v1/vision/{service}",
	routeV1Text:                    "/v1/text/{service}",
	routeLogging:                   "/v2/logging",
	routeTraceSetting:              "/v2/trace/setting",
	routeModelTraceSetting:         "/v2/models/{model}/trace/setting",
	routeSystemShmStatus:           "/v2/systemsharedmemory/status",
	routeSystemShmRegionStatus:     "/v2/systemsharedmemory/region/{region}/status",
	routeSystemShmRegister:         "/v2/systemsharedmemory/register",
	routeSystemShmRegionRegister:   "/v2/systemsharedmemory/region/{region}/register",
	routeSystemShmUnregister:       "/v2/systemsharedmemory/unregister",
	routeSystemShmRegionUnregister: "/v2/systemsharedmemory/region/{region}/unregister",
	routeCudaShmStatus:             "/v2/cudasharedmemory/status",
	routeCudaShmRegionStatus:       "/v2/cudasharedmemory/region/{region}/status",
	routeCudaShmRegister:           "/v2/cudasharedmemory/register",
	routeCudaShmRegionRegister:     "/v2/cudasharedmemory/region/{region}/register",
	routeCudaShmUnregister:         "/v2/cudasharedmemory/unregister",
	routeCudaShmRegionUnregister:   "/v2/cudasharedmemory/region/{region}/unregister",
}

// fixedRoutes are the templates without parameters, by path.
var fixedRoutes = map[string]httpRoute{
	"/v2":                  routeV2,
	"/v2/health/live":      routeHealthLive,
	"/v2/health/ready":     routeHealthReady,
	"/v2/models/stats":     routeModelsStats,
	"/v2/repository/index": routeRepositoryIndex,
	"/metrics":             routeMetrics,
	"/predict":             routePredict,
	"/v2/logging":          routeLogging,
	"/v2/trace/setting":    routeTraceSetting,
}

// shmRoutes are the shared-memory templates by extension and action: [0] for all
// regions, [1] for one region (/region/{region}/...).
var shmRoutes = map[string]map[string][2]httpRoute{
	"/v2/systemsharedmemory/": {
		"status":     {routeSystemShmStatus, routeSystemShmRegionStatus},
		"register":   {routeSystemShmRegister, routeSystemShmRegionRegister},
		"unregister": {routeSystemShmUnregister, routeSystemShmRegionUnregister},
	},
	"/v2/cudasharedmemory/": {
		"status":     {routeCudaShmStatus, routeCudaShmRegionStatus},
		"register":   {routeCudaShmRegister, routeCudaShmRegionRegister},
		"unregister": {routeCudaShmUnregister, routeCudaShmRegionUnregister},
	},
}

// modelSuffixes are the templates after /v2/models/{model} and after
// /v2/models/{model}/versions/{version}: [0] unversioned, [1] versioned.
var modelSuffixes = map[string][2]httpRoute{
	"":        {routeModel, routeVersion},
	"/ready":  {routeModelReady, routeVersionReady},
	"/config": {routeModelConfig, routeVersionConfig},
	"/stats":  {routeModelStats, routeVersionStats},
	"/infer":  {routeModelInfer, routeVersionInfer},
	// generate extension (Triton's), plain and Server-Sent Events
	"/generate":        {routeModelGenerate, routeVersionGenerate},
	"/generate_stream": {routeModelGenerateStream, routeVersionGenerateStream},
}

// routeOf templates a decoded request path the way the Python REST app routes it
// (trailing slashes ignored; a parameter is one non-empty path segment). It does not
// allocate.
func routeOf(path string) httpRoute {
	path = strings.TrimRight(path, "/")
	if r, ok := fixedRoutes[path]; ok {
		return r
	}
	if rest, ok := strings.CutPrefix(path, "/v2/models/"); ok {
		_, rest, ok := cutSegment(rest)
		if !ok {
			return routeOther
		}
		versioned := 0
		if v, ok := strings.CutPrefix(rest, "/versions/"); ok {
			if _, rest, ok = cutSegment(v); !ok {
				return routeOther
			}
			versioned = 1
		}
		if r, ok := modelSuffixes[rest]; ok {
			return r[versioned]
		}
		if rest == "/trace/setting" && versioned == 0 {
			return routeModelTraceSetting // per model, not per version
		}
		return routeOther
	}
	for prefix, actions := range shmRoutes {
		rest, ok := strings.CutPrefix(path, prefix)
		if !ok {
			continue
		}
		if r, ok := actions[rest]; ok {
			return r[0]
		}
		if region, ok := strings.CutPrefix(rest, "region/"); ok {
			if _, action, ok := cutSegment(region); ok {
				if r, ok := actions[strings.TrimPrefix(action, "/")]; ok && strings.HasPrefix(action, "/") {
					return r[1]
				}
			}
		}
		return routeOther
	}
	if rest, ok := strings.CutPrefix(path, "/v2/repository/models/"); ok {
		_, rest, ok := cutSegment(rest)
		switch {
		case ok && rest == "/load":
			return routeRepositoryLoad
		case ok && rest == "/unload":
			return routeRepositoryUnload
		}
		return routeOther
	}
	if rest, ok := strings.CutPrefix(path, "/v1/models/"); ok {
		if name, ok := strings.CutSuffix(rest, ":predict"); ok && name != "" && !strings.Contains(name, "/") {
			return routeV1Predict
		}
		return routeOther
	}
	if rest, ok := strings.CutPrefix(path, "/v1/vision/"); ok && isSegment(rest) {
		return routeV1Vision
	}
	if rest, ok := strings.CutPrefix(path, "/v1/text/"); ok && isSegment(rest) {
		return routeV1Text
	}
	return routeOther
}

// cutSegment splits s into its first path segment (non-empty) and the rest ("" or
// starting with '/').
func cutSegment(s string) (segment, rest string, ok bool) {
	i := strings.IndexByte(s, '/')
	if i < 0 {
		i = len(s)
	}
	return s[:i], s[i:], i > 0
}

func isSegment(s string) bool { return s != "" && strings.IndexByte(s, '/') < 0 }

// inferModel returns the model name of /v2/models/{name}/infer and
// /v2/models/{name}/versions/{v}/infer, and of their generate and generate_stream
// (trailing slashes ignored, as by the Python REST app, so that they do not slip past
// admission).
func inferModel(path string) (string, bool) {
	rest, ok := strings.CutPrefix(strings.TrimRight(path, "/"), "/v2/models/")
	if !ok {
		return "", false
	}
	name, rest, ok := cutSegment(rest)
	if !ok {
		return "", false
	}
	if isInferSuffix(rest) {
		return name, true
	}
	if v, ok := strings.CutPrefix(rest, "/versions/"); ok {
		if _, rest, ok := cutSegment(v); ok && isInferSuffix(rest) {
			return name, true
		}
	}
	return "", false
}

// isInferSuffix tells the paths after a model (and version) that run it: infer and
// the generate extension's generate and generate_stream.
func isInferSuffix(rest string) bool {
	return rest == "/infer" || rest == "/generate" || rest == "/generate_stream"
}
