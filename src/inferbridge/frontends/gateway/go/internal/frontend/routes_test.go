package frontend

import "testing"

func TestParsePathRoute(t *testing.T) {
	for _, tc := range []struct {
		path, want string
	}{
		{"/v2", "/v2"},
		{"/v2/", "/v2"},
		{"/v2/health/live", "/v2/health/live"},
		{"/v2/health/ready//", "/v2/health/ready"},
		{"/v2/health/other", "other"},
		{"/v2/models/stats", "/v2/models/stats"},
		{"/v2/models/resnet", "/v2/models/{model}"},
		{"/v2/models/resnet/ready", "/v2/models/{model}/ready"},
		{"/v2/models/resnet/config", "/v2/models/{model}/config"},
		{"/v2/models/resnet/stats", "/v2/models/{model}/stats"},
		{"/v2/models/resnet/infer", "/v2/models/{model}/infer"},
		{"/v2/models/stats/infer", "/v2/models/{model}/infer"},
		{"/v2/models/resnet/versions/3", "/v2/models/{model}/versions/{version}"},
		{"/v2/models/resnet/versions/3/ready", "/v2/models/{model}/versions/{version}/ready"},
		{"/v2/models/resnet/versions/3/config", "/v2/models/{model}/versions/{version}/config"},
		{"/v2/models/resnet/versions/3/stats", "/v2/models/{model}/versions/{version}/stats"},
		{"/v2/models/resnet/versions/3/infer", "/v2/models/{model}/versions/{version}/infer"},
		{"/v2/models/llm/generate", "/v2/models/{model}/generate"},
		{"/v2/models/llm/generate_stream/", "/v2/models/{model}/generate_stream"},
		{"/v2/models/llm/versions/2/generate", "/v2/models/{model}/versions/{version}/generate"},
		{"/v2/models/llm/versions/2/generate_stream", "/v2/models/{model}/versions/{version}/generate_stream"},
		{"/v2/models/llm/generate/x", "other"},
		{"/v2/models/resnet/versions", "other"},
		{"/v2/models/resnet/versions//infer", "other"},
		{"/v2/models//infer", "other"},
		{"/v2/models/a/b/infer", "other"},
		{"/v2/models/resnet/explain", "other"},
		{"/v2/repository/index", "/v2/repository/index"},
		{"/v2/repository/models/resnet/load", "/v2/repository/models/{model}/load"},
		{"/v2/repository/models/resnet/unload", "/v2/repository/models/{model}/unload"},
		{"/v2/repository/models/resnet", "other"},
		{"/metrics", "/metrics"},
		{"/predict", "/predict"},
		{"/v2/logging", "/v2/logging"},
		{"/v2/trace/setting", "/v2/trace/setting"},
		{"/v2/models/resnet/trace/setting", "/v2/models/{model}/trace/setting"},
		{"/v2/models/resnet/versions/3/trace/setting", "other"},
		{"/v2/systemsharedmemory/status", "/v2/systemsharedmemory/status"},
		{"/v2/systemsharedmemory/unregister", "/v2/systemsharedmemory/unregister"},
		{"/v2/systemsharedmemory/region/in0/register", "/v2/systemsharedmemory/region/{region}/register"},
		{"/v2/systemsharedmemory/region//status", "other"},
		{"/v2/systemsharedmemory/region/in0", "other"},
		{"/v2/systemsharedmemory/region/in0/explode", "other"},
		{"/v2/cudasharedmemory/region/x/unregister", "/v2/cudasharedmemory/region/{region}/unregister"},
		{"/v2/cudasharedmemory/status", "/v2/cudasharedmemory/status"},
		{"/v1/models/iris:predict", "/v1/models/{model}:predict"},
		{"/v1/models/:predict", "other"},
		{"/v1/models/a/b:predict", "other"},
		{"/v1/models/iris", "other"},
		{"/v1/vision/faces", "/v1/vision/{service}"},
		{"/v1/text/embed", "/v1/text/{service}"},
		{"/v1/text/embed/x", "other"},
		{"/v1/vision/", "other"},
		{"/", "other"},
		{"", "other"},
		{"/favicon.ico", "other"},
	} {
		if got := ParsePath(tc.path).Route.String(); got != tc.want {
			t.Errorf("ParsePath(%q).Route = %q, want %q", tc.path, got, tc.want)
		}
	}
}

func TestParsePathModel(t *testing.T) {
	for _, tc := range []struct {
		path, model, version string
		runs, infer          bool
	}{
		{"/v2/models/m/infer", "m", "", true, true},
		{"/v2/models/m/infer/", "m", "", true, true},
		{"/v2/models/m/versions/3/infer", "m", "3", true, true},
		{"/v2/models/m/generate", "m", "", true, false},
		{"/v2/models/m/versions/1/generate_stream", "m", "1", true, false},
		{"/v2/models/m/generate_streams", "m", "", false, false}, // an unknown suffix still names its model
		{"/v2/models/m/ready", "m", "", false, false},
		{"/v2/models/m/versions/2", "m", "2", false, false},
		{"/v2/models/m/trace/setting", "m", "", false, false},
		{"/v2/models/stats", "", "", false, false}, // every model
		{"/v2/models/stats/infer", "stats", "", true, true},
		{"/v2/models//infer", "", "", false, false},
		{"/v2/models/m/versions//infer", "m", "", false, false},
		{"/v2/repository/models/m/load", "m", "", false, false},
		{"/v1/models/m:predict", "m", "", false, false},
		{"/v1/models/a/b:predict", "", "", false, false},
		{"/v2/repository/index", "", "", false, false},
		{"/predict", "", "", false, false},
	} {
		p := ParsePath(tc.path)
		if p.Model != tc.model || p.Version != tc.version || p.Route.RunsModel() != tc.runs || p.Route.IsInfer() != tc.infer {
			t.Errorf("ParsePath(%q) = %+v (runs %v, infer %v); want model %q version %q runs %v infer %v", tc.path,
				p, p.Route.RunsModel(), p.Route.IsInfer(), tc.model, tc.version, tc.runs, tc.infer)
		}
	}
}

func TestParsePathDoesNotAllocate(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { ParsePath("/v2/models/resnet/versions/3/infer") }); n != 0 {
		t.Fatalf("ParsePath allocates %v times", n)
	}
}
