package main

import (
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// tailLines answers the last n lines of a file, reading only its end.
func tailLines(path string, n int) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	const chunk = 64 << 10
	end := info.Size()
	var data []byte
	for end > 0 && strings.Count(string(data), "\n") <= n && len(data) < 16<<20 {
		start := end - chunk
		if start < 0 {
			start = 0
		}
		buf := make([]byte, end-start)
		if _, err := f.ReadAt(buf, start); err != nil && err != io.EOF {
			return nil, err
		}
		data = append(buf, data...)
		end = start
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	if len(lines) == 1 && lines[0] == "" {
		return []string{}, nil
	}
	return lines, nil
}

// DiskUsage is what a node reports about its storage.
type DiskUsage struct {
	Path       string `json:"path"`
	TotalBytes uint64 `json:"total_bytes"`
	FreeBytes  uint64 `json:"free_bytes"`
	ModelBytes int64  `json:"model_bytes"`
}

func diskUsage(path, modelsDir string) DiskUsage {
	u := DiskUsage{Path: path}
	var st syscall.Statfs_t
	if syscall.Statfs(path, &st) == nil {
		u.TotalBytes = st.Blocks * uint64(st.Bsize)
		u.FreeBytes = st.Bavail * uint64(st.Bsize)
	}
	_ = filepath.WalkDir(modelsDir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				u.ModelBytes += info.Size()
			}
		}
		return nil
	})
	return u
}

// selfRSS answers this process's resident memory from /proc/self/status.
func selfRSS() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			fields := strings.Fields(line)
			if len(fields) >= 2 {
				kb, _ := strconv.ParseInt(fields[1], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// diagnose answers a "diagnose" request: the server's /v2, health and repository index,
// disk usage and the agent's own figures.
func (a *Agent) diagnose(ctx context.Context) map[string]any {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out := map[string]any{}
	if data, status, err := a.server.get(ctx, "/v2", 1<<20); err != nil {
		out["server"] = map[string]any{"error": err.Error()}
	} else {
		var meta any
		if json.Unmarshal(data, &meta) != nil {
			meta = string(data)
		}
		out["server"] = map[string]any{"status": status, "metadata": meta}
	}
	live, ready := a.server.Health(ctx)
	out["health"] = map[string]bool{"live": live, "ready": ready}
	if data, _, err := a.server.post(ctx, "/v2/repository/index", []byte("{}")); err != nil {
		out["repository"] = map[string]any{"error": err.Error()}
	} else {
		var index any
		_ = json.Unmarshal(data, &index)
		out["repository"] = index
	}
	out["disk"] = diskUsage(a.cfg.Repository, VersionsDir(a.cfg.Repository))
	out["agent"] = map[string]any{
		"version":    agentVersion,
		"uptime_s":   time.Since(a.started).Seconds(),
		"rss_bytes":  selfRSS(),
		"goroutines": runtime.NumGoroutine(),
		"models":     a.reconciler.Status(),
	}
	return out
}
