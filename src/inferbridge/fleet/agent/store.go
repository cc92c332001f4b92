package main

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Assignment is one model version the control plane wants on this node.
type Assignment struct {
	Model   string `json:"model"`
	Version int    `json:"version"`
	URI     string `json:"uri"`
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size"`
	Format  string `json:"format"`
}

// Artifacts is the node's local store of verified, unpacked model versions and the
// repository entries that point at them.
type Artifacts interface {
	// Has tells whether the version is unpacked and was verified against `sha`.
	Has(a Assignment) bool
	// Fetch downloads, verifies and unpacks a version (resuming a partial download).
	Fetch(ctx context.Context, a Assignment) error
	// Installed answers the version the repository's entry for `model` points at.
	Installed(model string) (int, bool)
	// Install points the repository's entry for `model` at an unpacked version, atomically.
	Install(model string, version int) error
	// Uninstall removes the repository's entry for `model`.
	Uninstall(model string) error
	// Managed lists the models whose repository entries this store made.
	Managed() []string
	// GC removes unpacked versions and partial downloads not in `keep` (model -> version).
	GC(keep map[string]int) error
}

// DiskArtifacts keeps versions under Repository/.fleet/<model>/<version>/ (a complete model
// directory: config + version directory; the server skips dot directories and refuses
// symlinks that leave the repository) and makes Repository/<model> a symlink to the
// installed one, so a version switch is one atomic rename. Downloads are staged in
// StateDir/staging.
type DiskArtifacts struct {
	Repository string
	StateDir   string
	Source     Source
	Log        *slog.Logger

	fetches atomic.Int64 // Fetch calls so far, done or failed
}

// Fetches is the number of Fetch calls so far (done or failed): a change says a
// download ran.
func (d *DiskArtifacts) Fetches() int64 { return d.fetches.Load() }

// VersionsDir is where unpacked versions live: a hidden directory of the repository.
func VersionsDir(repository string) string { return filepath.Join(repository, ".fleet") }

func (d *DiskArtifacts) versionsRoot() string { return VersionsDir(d.Repository) }

func (d *DiskArtifacts) versionDir(model string, version int) string {
	return filepath.Join(d.versionsRoot(), model, strconv.Itoa(version))
}

func (d *DiskArtifacts) markerPath(model string, version int) string {
	return d.versionDir(model, version) + ".sha256"
}

// PartialPath is where a download of `sha` is staged.
func (d *DiskArtifacts) PartialPath(sha string) string {
	return filepath.Join(d.StateDir, "staging", sha+".part")
}

// Has implements Artifacts.
func (d *DiskArtifacts) Has(a Assignment) bool {
	marker, err := os.ReadFile(d.markerPath(a.Model, a.Version))
	if err != nil || strings.TrimSpace(string(marker)) != a.SHA256 {
		return false
	}
	info, err := os.Stat(d.versionDir(a.Model, a.Version))
	return err == nil && info.IsDir()
}

// Fetch implements Artifacts.
func (d *DiskArtifacts) Fetch(ctx context.Context, a Assignment) error {
	d.fetches.Add(1)
	if a.Format != "" && a.Format != "tar.gz" {
		return fmt.Errorf("artefact format %q is not supported (tar.gz)", a.Format)
	}
	if err := os.MkdirAll(filepath.Join(d.StateDir, "staging"), 0o755); err != nil {
		return err
	}
	partial := d.PartialPath(a.SHA256)
	if err := Download(ctx, d.Source, a.URI, partial, a.Size, a.SHA256, d.Log); err != nil {
		return err
	}
	parent := filepath.Join(d.versionsRoot(), a.Model)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, "."+strconv.Itoa(a.Version)+".unpack-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := unpack(partial, tmp); err != nil {
		return fmt.Errorf("unpack %s: %w", a.URI, err)
	}
	if info, err := os.Stat(filepath.Join(tmp, strconv.Itoa(a.Version))); err != nil || !info.IsDir() {
		return fmt.Errorf("artefact %s has no version directory %d/", a.URI, a.Version)
	}
	final := d.versionDir(a.Model, a.Version)
	os.Remove(d.markerPath(a.Model, a.Version))
	if err := os.RemoveAll(final); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	if err := writeFileAtomic(d.markerPath(a.Model, a.Version), []byte(a.SHA256+"\n")); err != nil {
		return err
	}
	return os.Remove(partial)
}

// unpack extracts a tar.gz of regular files and directories, refusing any path that
// would land outside `dir` and any link.
func unpack(archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return err
	}
	defer gz.Close()
	tr := tar.NewReader(gz)
	for {
		header, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(header.Name)
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("entry %q escapes the model directory", header.Name)
		}
		target := filepath.Join(dir, name)
		switch header.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
			if err != nil {
				return err
			}
			_, copyErr := io.Copy(out, tr)
			if err := errors.Join(copyErr, out.Close()); err != nil {
				return err
			}
		default:
			return fmt.Errorf("entry %q is not a regular file or directory", header.Name)
		}
	}
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (d *DiskArtifacts) entry(model string) string {
	return filepath.Join(d.Repository, model)
}

// Installed implements Artifacts.
func (d *DiskArtifacts) Installed(model string) (int, bool) {
	target, err := os.Readlink(d.entry(model))
	if err != nil {
		return 0, false
	}
	if filepath.Dir(target) != filepath.Join(d.versionsRoot(), model) {
		return 0, false
	}
	version, err := strconv.Atoi(filepath.Base(target))
	return version, err == nil
}

// Install implements Artifacts.
func (d *DiskArtifacts) Install(model string, version int) error {
	entry := d.entry(model)
	if info, err := os.Lstat(entry); err == nil && info.Mode()&os.ModeSymlink == 0 {
		return fmt.Errorf("%s is a directory the agent does not manage; move it away", entry)
	}
	if err := os.MkdirAll(d.Repository, 0o755); err != nil {
		return err
	}
	tmp := filepath.Join(d.Repository, "."+model+".link")
	os.Remove(tmp)
	if err := os.Symlink(d.versionDir(model, version), tmp); err != nil {
		return err
	}
	return os.Rename(tmp, entry)
}

// Uninstall implements Artifacts.
func (d *DiskArtifacts) Uninstall(model string) error {
	if _, ok := d.Installed(model); !ok {
		return nil
	}
	return os.Remove(d.entry(model))
}

// Managed implements Artifacts.
func (d *DiskArtifacts) Managed() []string {
	entries, err := os.ReadDir(d.Repository)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if _, ok := d.Installed(e.Name()); ok {
			out = append(out, e.Name())
		}
	}
	return out
}

// GC implements Artifacts.
func (d *DiskArtifacts) GC(keep map[string]int) error {
	root := d.versionsRoot()
	models, err := os.ReadDir(root)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	var errs []error
	for _, m := range models {
		if !m.IsDir() {
			continue
		}
		versions, _ := os.ReadDir(filepath.Join(root, m.Name()))
		for _, v := range versions {
			name := strings.TrimSuffix(v.Name(), ".sha256")
			version, err := strconv.Atoi(name)
			if err != nil {
				continue // unpack temporaries are removed by their own Fetch
			}
			if wanted, ok := keep[m.Name()]; ok && wanted == version {
				continue
			}
			if installed, ok := d.Installed(m.Name()); ok && installed == version {
				continue // still the repository's entry: the model is being switched
			}
			if v.IsDir() {
				d.Log.Info("gc: removing an unassigned version", "model", m.Name(), "version", version)
			}
			errs = append(errs, os.RemoveAll(filepath.Join(root, m.Name(), v.Name())))
		}
	}
	return errors.Join(errs...)
}

// GCStaging removes partial downloads of digests no longer wanted once they are older
// than `grace` (an assignment that comes back soon resumes where it stopped).
func (d *DiskArtifacts) GCStaging(wanted map[string]bool, grace time.Duration) {
	entries, _ := os.ReadDir(filepath.Join(d.StateDir, "staging"))
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || wanted[strings.TrimSuffix(e.Name(), ".part")] || time.Since(info.ModTime()) < grace {
			continue
		}
		os.Remove(filepath.Join(d.StateDir, "staging", e.Name()))
	}
}
