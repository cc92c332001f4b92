package main

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// The trim drops the executable's read-only pages from the resident set and leaves the
// process running (its code faults back in from the page cache).
func TestTrimDropsExecutablePages(t *testing.T) {
	if _, err := os.Stat("/proc/self/maps"); err != nil {
		t.Skip("no /proc/self/maps (not Linux)")
	}
	before := rssFileKiB(t)
	advised := trimFilePages()
	after := rssFileKiB(t)
	if advised == 0 {
		t.Fatal("no executable mapping was advised")
	}
	if after >= before {
		t.Fatalf("file-backed resident KiB: %d before the trim, %d after", before, after)
	}
	if adviseFilePages(syscall.MADV_NORMAL) != advised {
		t.Fatal("MADV_NORMAL did not cover the same mappings")
	}
}

func rssFileKiB(t *testing.T) int {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "RssFile:") {
			kib, err := strconv.Atoi(strings.Fields(line)[1])
			if err != nil {
				t.Fatal(err)
			}
			return kib
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}
