package auth

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// reloadEvery is how often, at most, a watched file is looked at again (one stat, from
// whichever request comes first after it: no goroutine to stop).
const reloadEvery = time.Second

// maxFileBytes bounds what is read of a keys or JWKS file.
const maxFileBytes = 16 << 20

// watchedFile is a parsed file that is parsed again when it changes (its size,
// modification time, inode or device). A version that does not parse is logged once
// and the last good one stays in force.
type watchedFile[T any] struct {
	path  string
	what  string // for messages: "keys file", "JWKS file"
	parse func([]byte) (*T, error)
	logf  func(string, ...any)

	cur  atomic.Pointer[T]
	next atomic.Int64 // unix ns of the next look

	mu      sync.Mutex // one reload at a time
	stamp   fileStamp
	lastErr string
}

type fileStamp struct {
	size     int64
	mtime    int64
	dev, ino uint64
}

func stampOf(fi os.FileInfo) fileStamp {
	s := fileStamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.dev, s.ino = uint64(st.Dev), st.Ino
	}
	return s
}

// newWatchedFile loads path once; an error here is the caller's to report (the server
// does not start with a bad file).
func newWatchedFile[T any](path, what string, parse func([]byte) (*T, error), logf func(string, ...any), now time.Time) (*watchedFile[T], error) {
	w := &watchedFile[T]{path: path, what: what, parse: parse, logf: logf}
	v, stamp, err := w.load()
	if err != nil {
		return nil, err
	}
	w.cur.Store(v)
	w.stamp = stamp
	w.next.Store(now.Add(reloadEvery).UnixNano())
	return w, nil
}

// load reads and parses the file. A read error is an *os.PathError (or names the size
// limit); a parse error is the parser's; both are prefixed with what the file is.
func (w *watchedFile[T]) load() (*T, fileStamp, error) {
	v, stamp, unreadable, err := w.read()
	if err != nil {
		if unreadable {
			return nil, fileStamp{}, fmt.Errorf("%s %s cannot be read (%w)", w.what, w.path, err)
		}
		return nil, fileStamp{}, fmt.Errorf("%s %s: %w", w.what, w.path, err)
	}
	return v, stamp, nil
}

func (w *watchedFile[T]) read() (v *T, stamp fileStamp, unreadable bool, err error) {
	f, err := os.Open(w.path)
	if err != nil {
		return nil, stamp, true, reason(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, stamp, true, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, stamp, true, err
	}
	if len(data) > maxFileBytes {
		return nil, stamp, true, fmt.Errorf("over %d bytes", maxFileBytes)
	}
	if v, err = w.parse(data); err != nil {
		return nil, stamp, false, err
	}
	return v, stampOf(fi), false, nil
}

// get returns the file's current version, looking at the file first when the last look
// is reloadEvery old.
func (w *watchedFile[T]) get(now time.Time) *T {
	next := w.next.Load()
	if now.UnixNano() >= next && w.next.CompareAndSwap(next, now.Add(reloadEvery).UnixNano()) {
		w.check()
	}
	return w.cur.Load()
}

// check reloads the file when its stamp changed. The reasons logged are worded as the
// Python server's, which watches the same files.
func (w *watchedFile[T]) check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	fi, err := os.Stat(w.path)
	if err != nil {
		w.stamp = fileStamp{} // read it again once it is back
		w.complain(fmt.Sprintf("%s %s cannot be read (%v); the last good one stays in force", w.what, w.path, reason(err)))
		return
	}
	if stampOf(fi) == w.stamp { // unchanged since the last look, good or bad
		return
	}
	v, stamp, unreadable, err := w.read()
	if err != nil {
		w.stamp = stampOf(fi) // look again only when it changes again
		if unreadable {
			w.stamp = fileStamp{}
			w.complain(fmt.Sprintf("%s %s cannot be read (%v); the last good one stays in force", w.what, w.path, err))
		} else {
			w.complain(fmt.Sprintf("%s %s is not valid (%v); the last good one stays in force", w.what, w.path, err))
		}
		return
	}
	w.cur.Store(v)
	w.stamp = stamp
	w.lastErr = ""
	w.logf("auth: %s %s reloaded", w.what, w.path)
}

// complain logs msg unless it is the last one logged (a missing file is logged once).
func (w *watchedFile[T]) complain(msg string) {
	if msg != w.lastErr {
		w.lastErr = msg
		w.logf("auth: %s", msg)
	}
}

// reason is an OS error without the path, which the messages name already.
func reason(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
