package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Source opens an artefact's bytes from `offset` on (to resume a download).
type Source interface {
	Open(ctx context.Context, uri string, offset int64) (io.ReadCloser, error)
}

// ErrDigest marks an artefact whose bytes do not match its manifest: never retried at
// once, never served.
var ErrDigest = errors.New("digest mismatch")

// Sources picks the source of a URI by its scheme: s3://, http(s)://, file:// or a path.
type Sources struct {
	S3Endpoint string // host:port or http(s)://host:port
	HTTP       *http.Client

	mu        sync.Mutex
	s3        *minio.Client
	transport *http.Transport // the S3 client's
}

// CloseIdle closes the sources' idle connections. Called after each download: the next
// one may be hours away, and an idle net/http connection keeps two goroutines whose
// stacks the garbage collector scans (and whose code it keeps resident) until then.
func (s *Sources) CloseIdle() {
	if s.HTTP != nil {
		s.HTTP.CloseIdleConnections()
	}
	s.mu.Lock()
	transport := s.transport
	s.mu.Unlock()
	if transport != nil {
		transport.CloseIdleConnections()
	}
}

// Open implements Source.
func (s *Sources) Open(ctx context.Context, uri string, offset int64) (io.ReadCloser, error) {
	switch {
	case strings.HasPrefix(uri, "s3://"):
		return s.openS3(ctx, uri, offset)
	case strings.HasPrefix(uri, "http://"), strings.HasPrefix(uri, "https://"):
		return s.openHTTP(ctx, uri, offset)
	case strings.HasPrefix(uri, "file://"):
		return openFile(strings.TrimPrefix(uri, "file://"), offset)
	case strings.HasPrefix(uri, "/"):
		return openFile(uri, offset)
	}
	return nil, fmt.Errorf("unsupported artefact URI %q (s3://, http(s)://, file://)", uri)
}

func openFile(path string, offset int64) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (s *Sources) client() (*minio.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.s3 != nil {
		return s.s3, nil
	}
	endpoint := s.S3Endpoint
	if endpoint == "" {
		endpoint = os.Getenv("AWS_ENDPOINT_URL")
	}
	if endpoint == "" {
		endpoint = "https://s3.amazonaws.com"
	}
	secure := !strings.HasPrefix(endpoint, "http://")
	if u, err := url.Parse(endpoint); err == nil && u.Host != "" {
		endpoint = u.Host
	}
	region := os.Getenv("AWS_REGION")
	if region == "" {
		region = "us-east-1"
	}
	transport, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, err
	}
	client, err := minio.New(endpoint, &minio.Options{
		Creds:     credentials.NewEnvAWS(),
		Secure:    secure,
		Region:    region,
		Transport: transport,
	})
	if err != nil {
		return nil, err
	}
	s.s3, s.transport = client, transport
	return client, nil
}

func (s *Sources) openS3(ctx context.Context, uri string, offset int64) (io.ReadCloser, error) {
	bucket, key, _ := strings.Cut(strings.TrimPrefix(uri, "s3://"), "/")
	if bucket == "" || key == "" {
		return nil, fmt.Errorf("%s: expected s3://bucket/key", uri)
	}
	client, err := s.client()
	if err != nil {
		return nil, err
	}
	opts := minio.GetObjectOptions{}
	if offset > 0 {
		if err := opts.SetRange(offset, 0); err != nil {
			return nil, err
		}
	}
	object, err := client.GetObject(ctx, bucket, key, opts)
	if err != nil {
		return nil, err
	}
	// GetObject is lazy: Stat surfaces a missing object now, with S3's own message.
	if _, err := object.Stat(); err != nil {
		object.Close()
		return nil, fmt.Errorf("%s: %w", uri, err)
	}
	return object, nil
}

func (s *Sources) openHTTP(ctx context.Context, uri string, offset int64) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, err
	}
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	resp, err := s.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	switch {
	case resp.StatusCode == http.StatusPartialContent && offset > 0:
		return resp.Body, nil
	case resp.StatusCode == http.StatusOK && offset > 0:
		// No range support: skip what we have.
		if _, err := io.CopyN(io.Discard, resp.Body, offset); err != nil {
			resp.Body.Close()
			return nil, err
		}
		return resp.Body, nil
	case resp.StatusCode == http.StatusOK:
		return resp.Body, nil
	}
	resp.Body.Close()
	return nil, fmt.Errorf("%s: HTTP %d", uri, resp.StatusCode)
}

// Download fetches `uri` into `partial` (resuming what is there), checks its size and
// sha256, and leaves a complete, verified file. A digest mismatch removes the partial
// file and returns an error wrapping ErrDigest.
func Download(ctx context.Context, src Source, uri, partial string, size int64, sha string, log *slog.Logger) error {
	if closer, ok := src.(interface{ CloseIdle() }); ok {
		defer closer.CloseIdle()
	}
	const attempts = 3
	var lastErr error
	for attempt := 0; attempt < attempts; attempt++ {
		have := int64(0)
		if info, err := os.Stat(partial); err == nil {
			have = info.Size()
		}
		if have > size {
			os.Remove(partial)
			have = 0
		}
		if have < size {
			if have > 0 {
				log.Info("resuming download", "uri", uri, "offset", have, "size", size)
			}
			lastErr = fetchFrom(ctx, src, uri, partial, have)
			if lastErr != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				log.Warn("download interrupted", "uri", uri, "error", lastErr)
				continue
			}
		}
		info, err := os.Stat(partial)
		if err != nil {
			return err
		}
		if info.Size() != size {
			if info.Size() < size {
				lastErr = fmt.Errorf("%s: got %d of %d bytes", uri, info.Size(), size)
				continue
			}
			os.Remove(partial)
			return fmt.Errorf("%w: %s is %d bytes, the manifest says %d", ErrDigest, uri, info.Size(), size)
		}
		got, err := fileSHA256(partial)
		if err != nil {
			return err
		}
		if got != sha {
			os.Remove(partial)
			return fmt.Errorf("%w: %s has sha256 %s, the manifest says %s", ErrDigest, uri, got, sha)
		}
		return nil
	}
	return lastErr
}

func fetchFrom(ctx context.Context, src Source, uri, partial string, offset int64) error {
	body, err := src.Open(ctx, uri, offset)
	if err != nil {
		return err
	}
	defer body.Close()
	f, err := os.OpenFile(partial, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	_, copyErr := io.Copy(f, body)
	syncErr := f.Sync()
	closeErr := f.Close()
	return errors.Join(copyErr, syncErr, closeErr)
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
