package main

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// trimFilePages drops this process's clean, file-backed pages (the executable's code and
// read-only data) from its resident set with MADV_DONTNEED. Start-up touches most of the
// binary once (package initialisation); afterwards only the steady-state path faults its
// pages back in. The pages stay in the page cache: nothing is read from disk again unless
// the kernel reclaimed them, or `evict` asked for it.
//
// Why evict: the page cache holds a freshly built or copied binary in large folios (up to
// megabytes), and a fault maps the whole folio, so touching one function made ~2.9 MiB of
// read-only data resident again within a second of a trim. With `evict`, the pages no
// process maps are dropped from the page cache (POSIX_FADV_DONTNEED); read again under
// MADV_RANDOM (no readahead) they come back as single 4 KiB pages and stay cached that
// way, so later faults map only what the agent runs. A few evictions suffice; evicting at
// every trim would read the binary from disk again each time. Returns the bytes advised.
func trimFilePages(evict bool) int {
	n := adviseFilePages(syscall.MADV_DONTNEED)
	if evict {
		evictExecutable()
	}
	return n
}

func evictExecutable() {
	exe, err := os.Executable()
	if err != nil {
		return
	}
	f, err := os.Open(exe)
	if err != nil {
		return
	}
	defer f.Close()
	const posixFadvDontneed = 4
	syscall.Syscall6(syscall.SYS_FADVISE64, f.Fd(), 0, 0, posixFadvDontneed, 0, 0)
}

// adviseFilePages applies madvise(advice) to the executable's read-only mappings and
// answers the bytes advised.
func adviseFilePages(advice int) int {
	exe, err := os.Executable()
	if err != nil {
		return 0
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0
	}
	defer f.Close()
	total := 0
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		// address perms offset dev inode path: only the executable's read-only mappings
		// (code, rodata); writable ones hold data that must not be dropped.
		if len(fields) < 6 || fields[5] != exe || strings.Contains(fields[1], "w") {
			continue
		}
		start, end, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		lo, err1 := strconv.ParseUint(start, 16, 64)
		hi, err2 := strconv.ParseUint(end, 16, 64)
		if err1 != nil || err2 != nil || hi <= lo {
			continue
		}
		_, _, errno := syscall.Syscall(syscall.SYS_MADVISE, uintptr(lo), uintptr(hi-lo), uintptr(advice))
		if errno == 0 {
			total += int(hi - lo)
		}
	}
	return total
}
