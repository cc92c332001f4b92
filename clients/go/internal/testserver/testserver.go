// Package testserver starts a real `inferbridge serve` subprocess for the Go tests: on
// free loopback ports, with the ports parsed from what the server prints, stopped with
// SIGTERM.
package testserver

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Server is a running inferbridge server.
type Server struct {
	// RESTURL is the REST base URL, such as "http://127.0.0.1:41234".
	RESTURL string
	// GRPCAddr is the gRPC target, such as "127.0.0.1:41235".
	GRPCAddr string

	cmd    *exec.Cmd
	done   chan struct{}
	mu     sync.Mutex
	output bytes.Buffer
}

var (
	restLine = regexp.MustCompile(`REST listening on (http://\S+)`)
	grpcLine = regexp.MustCompile(`gRPC listening on (\S+)`)
)

// FindPython returns the Python interpreter that runs inferbridge: $INFERBRIDGE_PYTHON,
// else the repository's .venv/bin/python found from moduleDir (clients/go), else "" when
// there is none.
func FindPython(moduleDir string) string {
	if p := os.Getenv("INFERBRIDGE_PYTHON"); p != "" {
		return p
	}
	candidate := filepath.Join(moduleDir, "..", "..", ".venv", "bin", "python")
	if info, err := os.Stat(candidate); err == nil && !info.IsDir() {
		abs, _ := filepath.Abs(candidate)
		return abs
	}
	return ""
}

// Start runs `python -m inferbridge serve [repository] --http-port 0 --grpc-port 0
// [extra...]` and waits until it prints "inferbridge: serving" (or timeout passes). An
// empty repository serves the bundled examples.
func Start(python, repository string, timeout time.Duration, extra ...string) (*Server, error) {
	return StartWithEnv(python, repository, nil, timeout, extra...)
}

// StartWithEnv is Start with env ("KEY=value" entries, such as a PYTHONPATH that makes
// the repository's test runtimes importable) added to the server's environment.
func StartWithEnv(python, repository string, env []string, timeout time.Duration, extra ...string) (*Server, error) {
	args := []string{"-m", "inferbridge", "serve"}
	if repository != "" {
		args = append(args, repository)
	}
	args = append(args, "--http-port", "0", "--grpc-port", "0", "--log-level", "warning")
	args = append(args, extra...)
	cmd := exec.Command(python, args...)
	cmd.Env = append(append(os.Environ(), "PYTHONUNBUFFERED=1"), env...)
	dieWithParent(cmd)
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", python, err)
	}
	s := &Server{cmd: cmd, done: make(chan struct{})}
	serving := make(chan struct{})
	go func() {
		scanner := bufio.NewScanner(pipe)
		announced := false
		for scanner.Scan() {
			line := scanner.Text()
			s.mu.Lock()
			s.output.WriteString(line + "\n")
			if m := restLine.FindStringSubmatch(line); m != nil {
				s.RESTURL = m[1]
			}
			if m := grpcLine.FindStringSubmatch(line); m != nil {
				s.GRPCAddr = m[1]
			}
			s.mu.Unlock()
			if !announced && strings.Contains(line, "inferbridge: serving") {
				announced = true
				close(serving)
			}
		}
		_ = cmd.Wait()
		close(s.done)
	}()
	select {
	case <-serving:
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.RESTURL == "" || s.GRPCAddr == "" {
			s.kill()
			return nil, fmt.Errorf("inferbridge did not print its ports:\n%s", s.output.String())
		}
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("inferbridge exited early:\n%s", s.Output())
	case <-time.After(timeout):
		s.kill()
		return nil, fmt.Errorf("inferbridge did not start serving within %v:\n%s", timeout, s.Output())
	}
}

// ServeHasFlag reports whether `python -m inferbridge serve --help` lists flag (such as
// "--model-control-mode"), for tests of server features that may not have landed yet.
func ServeHasFlag(ctx context.Context, python, flag string) (bool, error) {
	out, err := exec.CommandContext(ctx, python, "-m", "inferbridge", "serve", "--help").CombinedOutput()
	if err != nil {
		return false, fmt.Errorf("%s -m inferbridge serve --help: %w\n%s", python, err, out)
	}
	return regexp.MustCompile(`(^|[\s\[])` + regexp.QuoteMeta(flag) + `([\s=\]]|$)`).Match(out), nil
}

// Output is everything the server printed so far.
func (s *Server) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.output.String()
}

// Stop sends SIGTERM and waits for the server to exit, killing it after 20 seconds.
func (s *Server) Stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		s.kill()
	}
}

func (s *Server) kill() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// BuildConformanceRepo writes the conformance repository (tests/conformance/build_repo.py)
// into dir.
func BuildConformanceRepo(ctx context.Context, python, moduleDir, dir string) error {
	script := filepath.Join(moduleDir, "..", "..", "tests", "conformance", "build_repo.py")
	out, err := exec.CommandContext(ctx, python, script, dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", python, script, err, out)
	}
	return nil
}

// LinkExamples makes the bundled example models named in models (built by
// `python -m inferbridge examples`, which prints the repository's path) appear in the
// repository dir, as copies: the server refuses a model directory that is a symbolic link
// out of its repository.
func LinkExamples(ctx context.Context, python, dir string, models ...string) error {
	out, err := exec.CommandContext(ctx, python, "-m", "inferbridge", "examples").Output()
	if err != nil {
		return fmt.Errorf("%s -m inferbridge examples: %w", python, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	examples := strings.TrimSpace(lines[len(lines)-1])
	for _, m := range models {
		if err := copyTree(filepath.Join(examples, m), filepath.Join(dir, m)); err != nil {
			return err
		}
	}
	return nil
}

// copyTree copies the directory src to dst (regular files and directories).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, entry fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if entry.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
}
