package main

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// APIKeyFile is the agent's API key for a control plane that runs with --auth-keys
// (--api-key-file). It is read again whenever the file changes, so that a key
// provisioned or rotated after the agent started is used without a restart.
type APIKeyFile struct {
	Path string

	mu      sync.Mutex
	modTime time.Time
	size    int64
	key     string
}

// Key answers the key: the file's contents without surrounding white space. An error
// names the file and what is wrong with it (missing, unreadable, empty).
func (f *APIKeyFile) Key() (string, error) {
	info, err := os.Stat(f.Path)
	if err != nil {
		return "", fmt.Errorf("--api-key-file: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.key != "" && info.ModTime().Equal(f.modTime) && info.Size() == f.size {
		return f.key, nil
	}
	data, err := os.ReadFile(f.Path)
	if err != nil {
		return "", fmt.Errorf("--api-key-file: %w", err)
	}
	key := strings.TrimSpace(string(data))
	if key == "" {
		return "", fmt.Errorf("--api-key-file %s is empty; expected an API key (inferbridge auth new-key --scope agent)", f.Path)
	}
	f.key, f.modTime, f.size = key, info.ModTime(), info.Size()
	return key, nil
}
