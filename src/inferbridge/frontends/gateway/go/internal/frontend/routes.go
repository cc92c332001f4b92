package frontend

import "strings"

// The one parser of the REST paths both backends serve (OIP, Triton's extensions, the
// seed shortcuts): ParsePath names a request's route template and the model (and
// version) its path names. The template is the `route` label of the request metrics: a
// label never carries a raw path, so that its cardinality stays bounded whatever
// clients send. Authorization classifies paths on its own (auth.ClassifyHTTP), split
// at every '/' exactly as the Python app routes them.

// Route is a REST route template; its String is the template.
type Route uint8

const (
	RouteOther Route = iota
	RouteV2
	RouteHealthLive
	RouteHealthReady
	RouteModelsStats
	RouteRepositoryIndex
	RouteRepositoryLoad
	RouteRepositoryUnload
	RouteModel
	RouteModelReady
	RouteModelConfig
	RouteModelStats
	RouteModelInfer
	RouteVersion
	RouteVersionReady
	RouteVersionConfig
	RouteVersionStats
	RouteVersionInfer
	RouteModelGenerate
	RouteModelGenerateStream
	RouteVersionGenerate
	RouteVersionGenerateStream
	RouteMetrics
	RoutePredict
	RouteV1Predict
	RouteV1Vision
	RouteV1Text
	RouteLogging
	RouteTraceSetting
	RouteModelTraceSetting
	RouteSystemShmStatus
	RouteSystemShmRegionStatus
	RouteSystemShmRegister
	RouteSystemShmRegionRegister
	RouteSystemShmUnregister
	RouteSystemShmRegionUnregister
	RouteCudaShmStatus
	RouteCudaShmRegionStatus
	RouteCudaShmRegister
	RouteCudaShmRegionRegister
	RouteCudaShmUnregister
	RouteCudaShmRegionUnregister
	NumRoutes
)

var routeNames = [NumRoutes]string{
	RouteOther:                     "other",
	RouteV2:                        "/v2",
	RouteHealthLive:                "/v2/health/live",
	RouteHealthReady:               "/v2/health/ready",
	RouteModelsStats:               "/v2/models/stats",
	RouteRepositoryIndex:           "/v2/repository/index",
	RouteRepositoryLoad:            "/v2/repository/models/{model}/load",
	RouteRepositoryUnload:          "/v2/repository/models/{model}/unload",
	RouteModel:                     "/v2/models/{model}",
	RouteModelReady:                "/v2/models/{model}/ready",
	RouteModelConfig:               "/v2/models/{model}/config",
	RouteModelStats:                "/v2/models/{model}/stats",
	RouteModelInfer:                "/v2/models/{model}/infer",
	RouteVersion:                   "/v2/models/{model}/versions/{version}",
	RouteVersionReady:              "/v2/models/{model}/versions/{version}/ready",
	RouteVersionConfig:             "/v2/models/{model}/versions/{version}/config",
	RouteVersionStats:              "/v2/models/{model}/versions/{version}/stats",
	RouteVersionInfer:              "/v2/models/{model}/versions/{version}/infer",
	RouteModelGenerate:             "/v2/models/{model}/generate",
	RouteModelGenerateStream:       "/v2/models/{model}/generate_stream",
	RouteVersionGenerate:           "/v2/models/{model}/versions/{version}/generate",
	RouteVersionGenerateStream:     "/v2/models/{model}/versions/{version}/generate_stream",
	RouteMetrics:                   "/metrics",
	RoutePredict:                   "/predict",
	RouteV1Predict:                 "/v1/models/{model}:predict",
	RouteV1Vision:                  "/v1/vision/{service}",
	RouteV1Text:                    "/v1/text/{service}",
	RouteLogging:                   "/v2/logging",
	RouteTraceSetting:              "/v2/trace/setting",
	RouteModelTraceSetting:         "/v2/models/{model}/trace/setting",
	RouteSystemShmStatus:           "/v2/systemsharedmemory/status",
	RouteSystemShmRegionStatus:     "/v2/systemsharedmemory/region/{region}/status",
	RouteSystemShmRegister:         "/v2/systemsharedmemory/register",
	RouteSystemShmRegionRegister:   "/v2/systemsharedmemory/region/{region}/register",
	RouteSystemShmUnregister:       "/v2/systemsharedmemory/unregister",
	RouteSystemShmRegionUnregister: "/v2/systemsharedmemory/region/{region}/unregister",
	RouteCudaShmStatus:             "/v2/cudasharedmemory/status",
	RouteCudaShmRegionStatus:       "/v2/cudasharedmemory/region/{region}/status",
	RouteCudaShmRegister:           "/v2/cudasharedmemory/register",
	RouteCudaShmRegionRegister:     "/v2/cudasharedmemory/region/{region}/register",
	RouteCudaShmUnregister:         "/v2/cudasharedmemory/unregister",
	RouteCudaShmRegionUnregister:   "/v2/cudasharedmemory/region/{region}/unregister",
}

// fixedRoutes are the templates without parameters, by path.
var fixedRoutes = map[string]Route{
	"/v2":                  RouteV2,
	"/v2/health/live":      RouteHealthLive,
	"/v2/health/ready":     RouteHealthReady,
	"/v2/models/stats":     RouteModelsStats,
	"/v2/repository/index": RouteRepositoryIndex,
	"/metrics":             RouteMetrics,
	"/predict":             RoutePredict,
	"/v2/logging":          RouteLogging,
	"/v2/trace/setting":    RouteTraceSetting,
}

// shmRoutes are the shared-memory templates by extension and action: [0] for all
// regions, [1] for one region (/region/{region}/...).
var shmRoutes = map[string]map[string][2]Route{
	"/v2/systemsharedmemory/": {
		"status":     {RouteSystemShmStatus, RouteSystemShmRegionStatus},
		"register":   {RouteSystemShmRegister, RouteSystemShmRegionRegister},
		"unregister": {RouteSystemShmUnregister, RouteSystemShmRegionUnregister},
	},
	"/v2/cudasharedmemory/": {
		"status":     {RouteCudaShmStatus, RouteCudaShmRegionStatus},
		"register":   {RouteCudaShmRegister, RouteCudaShmRegionRegister},
		"unregister": {RouteCudaShmUnregister, RouteCudaShmRegionUnregister},
	},
}

// modelSuffixes are the templates after /v2/models/{model} and after
// /v2/models/{model}/versions/{version}: [0] unversioned, [1] versioned.
var modelSuffixes = map[string][2]Route{
	"":        {RouteModel, RouteVersion},
	"/ready":  {RouteModelReady, RouteVersionReady},
	"/config": {RouteModelConfig, RouteVersionConfig},
	"/stats":  {RouteModelStats, RouteVersionStats},
	"/infer":  {RouteModelInfer, RouteVersionInfer},
	// generate extension (Triton's), plain and Server-Sent Events
	"/generate":        {RouteModelGenerate, RouteVersionGenerate},
	"/generate_stream": {RouteModelGenerateStream, RouteVersionGenerateStream},
}

// String is the route's template, "other" for a path no route takes.
func (r Route) String() string {
	if r < NumRoutes {
		return routeNames[r]
	}
	return routeNames[RouteOther]
}

// IsInfer tells the OIP infer routes, whose body is an InferenceRequest.
func (r Route) IsInfer() bool { return r == RouteModelInfer || r == RouteVersionInfer }

// RunsModel tells the routes that run their model: infer and the generate extension's
// generate and generate_stream (a POST of them is admitted against the model's limit).
func (r Route) RunsModel() bool {
	switch r {
	case RouteModelInfer, RouteVersionInfer, RouteModelGenerate, RouteVersionGenerate,
		RouteModelGenerateStream, RouteVersionGenerateStream:
		return true
	}
	return false
}

// Path is a parsed request path. Model and Version are substrings of the path (no
// allocation); Model is set for every path under /v2/models/{model} (whatever follows:
// an unknown suffix still names its model), /v2/repository/models/{model} and
// /v1/models/{model}:predict, Version under /v2/models/{model}/versions/{version}.
type Path struct {
	Route          Route
	Model, Version string
}

// ParsePath templates a decoded request path the way the Python REST app routes it
// (trailing slashes ignored; a parameter is one non-empty path segment). It does not
// allocate.
func ParsePath(path string) Path {
	path = strings.TrimRight(path, "/")
	if r, ok := fixedRoutes[path]; ok {
		return Path{Route: r}
	}
	if rest, ok := strings.CutPrefix(path, "/v2/models/"); ok {
		model, rest, ok := cutSegment(rest)
		if !ok {
			return Path{}
		}
		p := Path{Model: model}
		versioned := 0
		if v, ok := strings.CutPrefix(rest, "/versions/"); ok {
			var version string
			if version, rest, ok = cutSegment(v); !ok {
				return p
			}
			p.Version, versioned = version, 1
		}
		if r, ok := modelSuffixes[rest]; ok {
			p.Route = r[versioned]
		} else if rest == "/trace/setting" && versioned == 0 {
			p.Route = RouteModelTraceSetting // per model, not per version
		}
		return p
	}
	for prefix, actions := range shmRoutes {
		rest, ok := strings.CutPrefix(path, prefix)
		if !ok {
			continue
		}
		if r, ok := actions[rest]; ok {
			return Path{Route: r[0]}
		}
		if region, ok := strings.CutPrefix(rest, "region/"); ok {
			if _, action, ok := cutSegment(region); ok {
				if r, ok := actions[strings.TrimPrefix(action, "/")]; ok && strings.HasPrefix(action, "/") {
					return Path{Route: r[1]}
				}
			}
		}
		return Path{}
	}
	if rest, ok := strings.CutPrefix(path, "/v2/repository/models/"); ok {
		model, rest, ok := cutSegment(rest)
		switch {
		case ok && rest == "/load":
			return Path{Route: RouteRepositoryLoad, Model: model}
		case ok && rest == "/unload":
			return Path{Route: RouteRepositoryUnload, Model: model}
		}
		return Path{}
	}
	if rest, ok := strings.CutPrefix(path, "/v1/models/"); ok {
		if name, ok := strings.CutSuffix(rest, ":predict"); ok && name != "" && !strings.Contains(name, "/") {
			return Path{Route: RouteV1Predict, Model: name}
		}
		return Path{}
	}
	if rest, ok := strings.CutPrefix(path, "/v1/vision/"); ok && isSegment(rest) {
		return Path{Route: RouteV1Vision}
	}
	if rest, ok := strings.CutPrefix(path, "/v1/text/"); ok && isSegment(rest) {
		return Path{Route: RouteV1Text}
	}
	return Path{}
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
