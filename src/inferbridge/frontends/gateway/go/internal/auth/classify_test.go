package auth

import (
	"reflect"
	"testing"
)

func TestClassifyHTTP(t *testing.T) {
	cases := []struct {
		method, target string
		want           Action
	}{
		{"GET", "/v2/health/live", Action{Kind: Health}},
		{"GET", "/v2/health/ready/", Action{Kind: Health}},
		{"GET", "/v2/health/other", Action{Kind: Any}},
		{"POST", "/v2/models/iris/infer", infer("iris")},
		{"POST", "/v2/models/iris/infer//", infer("iris")},
		{"POST", "/v2/models/iris/versions/2/infer", infer("iris")},
		{"POST", "/v2/models/iris/generate", infer("iris")},
		{"POST", "/v2/models/iris/versions/1/generate_stream", infer("iris")},
		{"GET", "/v2/models/iris/infer", infer("iris")},               // a wrong method needs the route's scope; the app answers 405
		{"POST", "/v2/models/versions/1/infer", Action{Kind: Any}},    // name "versions", then "1/infer": the app answers 404
		{"GET", "/v2/models/iris/versions/infer", Action{Kind: Read}}, // version "infer"'s metadata, as the app reads it
		{"POST", "/v2/models/iris//infer", Action{Kind: Any}},         // the app answers 404
		{"POST", "/v1/models/iris:predict", infer("iris")},
		{"POST", "/v1/models/a/b:predict", Action{Kind: Any}},
		{"POST", "/predict", infer("default-model")},
		{"POST", "/predict/", infer("default-model")},
		{"POST", "/v1/vision/faces", infer("face_detection")},
		{"POST", "/v1/vision/classify", infer("digits_classifier")},
		{"POST", "/v1/vision/detect", infer("detection")},
		{"POST", "/v1/text/embed", infer("text_embedding")},
		{"POST", "/v1/vision/faces?model=my_faces", infer("my_faces")},
		{"POST", "/v1/vision/faces?model=a&model=b", infer("b")},       // parse_qs: the last value
		{"POST", "/v1/vision/faces?model=a&model=", infer("a")},        // blank values dropped
		{"POST", "/v1/vision/faces?model=", infer("face_detection")},   // blank: the default
		{"POST", "/v1/text/embed?model=x;model=y", infer("x;model=y")}, // ';' is no separator
		{"POST", "/v1/text/embed?model=%E2%82%AC+1", infer("€ 1")},
		{"POST", "/v1/text/embed?model=%zz", infer("%zz")},
		{"POST", "/v1/vision/unknown", Action{Kind: Any}},
		{"GET", "/v2", Action{Kind: Read}},
		{"GET", "/v2/", Action{Kind: Read}},
		{"GET", "/v2/models/iris", Action{Kind: Read}},
		{"GET", "/v2/models/iris/versions/1", Action{Kind: Read}},
		{"GET", "/v2/models/iris/ready", Action{Kind: Read}},
		{"GET", "/v2/models/iris/versions/1/config", Action{Kind: Read}},
		{"GET", "/v2/models/iris/stats", Action{Kind: Read}},
		{"GET", "/v2/models/stats", Action{Kind: Read}},
		{"POST", "/v2/repository/index", Action{Kind: Read}},
		{"GET", "/metrics", Action{Kind: Read}},
		{"POST", "/v2/repository/models/iris/load", Action{Kind: Admin}},
		{"POST", "/v2/repository/models/iris/unload", Action{Kind: Admin}},
		{"POST", "/v2/repository/models/iris/other", Action{Kind: Any}},
		{"GET", "/v2/logging", Action{Kind: Read}},
		{"POST", "/v2/logging", Action{Kind: Admin}},
		{"HEAD", "/v2/logging", Action{Kind: Admin}},
		{"GET", "/v2/trace/setting", Action{Kind: Read}},
		{"POST", "/v2/trace/setting", Action{Kind: Admin}},
		{"GET", "/v2/models/iris/trace/setting", Action{Kind: Read}},
		{"POST", "/v2/models/iris/trace/setting", Action{Kind: Admin}},
		{"GET", "/v2/systemsharedmemory/status", Action{Kind: SharedMemory}},
		{"POST", "/v2/systemsharedmemory/region/r/register", Action{Kind: SharedMemory}},
		{"POST", "/v2/cudasharedmemory/unregister", Action{Kind: SharedMemory}},
		{"GET", "/v1/rollouts", Action{Kind: Read}},
		{"GET", "/v1/rollouts/iris", Action{Kind: Read}},
		{"POST", "/v1/rollouts", Action{Kind: Admin}},
		{"DELETE", "/v1/rollouts/iris", Action{Kind: Admin}},
		{"GET", "/v1/rollout-audit", Action{Kind: Read}},
		{"GET", "/", Action{Kind: Any}},
		{"GET", "/docs", Action{Kind: Any}},
		{"GET", "/v3/models/iris/infer", Action{Kind: Any}},
	}
	for _, tc := range cases {
		path, raw, _ := cut(tc.target)
		got := ClassifyHTTP(tc.method, path, ParseQuery(raw), "default-model")
		if got != tc.want {
			t.Errorf("%s %s = %+v, want %+v", tc.method, tc.target, got, tc.want)
		}
	}
}

func cut(target string) (string, string, bool) {
	for i := 0; i < len(target); i++ {
		if target[i] == '?' {
			return target[:i], target[i+1:], true
		}
	}
	return target, "", false
}

func TestClassifyGRPC(t *testing.T) {
	cases := []struct {
		method, model string
		want          Action
	}{
		{"/inference.GRPCInferenceService/ServerLive", "", Action{Kind: Health}},
		{"/inference.GRPCInferenceService/ServerReady", "", Action{Kind: Health}},
		{"/grpc.health.v1.Health/Check", "", Action{Kind: Health}},
		{"/grpc.health.v1.Health/Watch", "", Action{Kind: Health}},
		{"/inference.GRPCInferenceService/ModelInfer", "iris", infer("iris")},
		{"/inference.GRPCInferenceService/ModelStreamInfer", "iris", infer("iris")},
		{"/ai.AIService/Predict", "iris", infer("iris")},
		{"/inference.GRPCInferenceService/ModelMetadata", "iris", Action{Kind: Read}},
		{"/inference.GRPCInferenceService/ServerMetadata", "", Action{Kind: Read}},
		{"/inference.GRPCInferenceService/ModelReady", "", Action{Kind: Read}},
		{"/inference.GRPCInferenceService/ModelConfig", "", Action{Kind: Read}},
		{"/inference.GRPCInferenceService/ModelStatistics", "", Action{Kind: Read}},
		{"/inference.GRPCInferenceService/RepositoryIndex", "", Action{Kind: Read}},
		{"/inference.GRPCInferenceService/RepositoryModelLoad", "", Action{Kind: Admin}},
		{"/inference.GRPCInferenceService/RepositoryModelUnload", "", Action{Kind: Admin}},
		{"/inference.GRPCInferenceService/LogSettings", "", Action{Kind: Admin}},
		{"/inference.GRPCInferenceService/TraceSetting", "", Action{Kind: Admin}},
		{"/inference.GRPCInferenceService/SystemSharedMemoryRegister", "", Action{Kind: SharedMemory}},
		{"/inference.GRPCInferenceService/CudaSharedMemoryStatus", "", Action{Kind: SharedMemory}},
		{"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "", Action{Kind: Any}},
		{"/inference.GRPCInferenceService/Nope", "", Action{Kind: Any}},
	}
	for _, tc := range cases {
		if got := ClassifyGRPC(tc.method, tc.model); got != tc.want {
			t.Errorf("%s = %+v, want %+v", tc.method, got, tc.want)
		}
	}
}

func TestParseQuery(t *testing.T) {
	cases := map[string]map[string][]string{
		"":                    {},
		"a=1&b=2&a=3":         {"a": {"1", "3"}, "b": {"2"}},
		"a=&b":                {},
		"a+b=c+d":             {"a b": {"c d"}},
		"m=%C3%A9":            {"m": {"é"}},
		"m=\xe9":              {"m": {"é"}}, // a raw byte is Latin-1
		"m=%FF":               {"m": {"\uFFFD"}},
		"m=%4":                {"m": {"%4"}},
		"m=a%3Bb;c":           {"m": {"a;b;c"}},
		"m=a=b":               {"m": {"a=b"}},
		"&&m=x&&":             {"m": {"x"}},
		"=x":                  {"": {"x"}},
		"m=%FF%FE":            {"m": {"\uFFFD\uFFFD"}},
		"m=%ff\xff%ff":        {"m": {"\uFFFDÿ\uFFFD"}},
		"m=%F0%9F%98":         {"m": {"\uFFFD"}},
		"m=%41%42\xe9%43":     {"m": {"ABéC"}},
		"m=%E2%82\xe9%AC":     {"m": {"\uFFFDé\uFFFD"}},
		"model=fraud%2A&x=%2": {"model": {"fraud*"}, "x": {"%2"}},
	}
	for raw, want := range cases {
		got := map[string][]string(ParseQuery(raw))
		if !reflect.DeepEqual(got, want) {
			t.Errorf("ParseQuery(%q) = %q, want %q", raw, got, want)
		}
	}
}
