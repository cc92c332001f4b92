package main

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
)

// trimFilePages drops this process's clean, file-backed pages (the executable's code and
// read-only data) from its resident set with MADV_DONTNEED. Start-up touches most of the
// binary once (package initialisation); afterwards only the steady-state path faults its
// pages back in, from the page cache (nothing is read from disk again unless the kernel
// reclaimed them). What comes back is the steady path's pages at the kernel's fault-around
// granularity (64 KiB blocks of code): measured, 33 of the 34 code blocks the agent
// touches at steady state are wholly resident. Returns the bytes advised.
func trimFilePages() int {
	return adviseFilePages(syscall.MADV_DONTNEED)
}

// adviseFilePages applies madvise(advice) to the executable's read-only mappings and
// answers the bytes advised.
func adviseFilePages(advice int) int {
	exe, err := os.Executable()
	if err != nil {
		return 0
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0
	}
	total := 0
	for len(maps) > 0 {
		var line []byte
		line, maps, _ = bytes.Cut(maps, []byte("\n"))
		// address perms offset dev inode path: only the executable's read-only mappings
		// (code, rodata); writable ones hold data that must not be dropped.
		fields := bytes.Fields(line)
		if len(fields) < 6 || string(fields[5]) != exe || bytes.IndexByte(fields[1], 'w') >= 0 {
			continue
		}
		start, end, ok := bytes.Cut(fields[0], []byte("-"))
		if !ok {
			continue
		}
		lo, err1 := strconv.ParseUint(string(start), 16, 64)
		hi, err2 := strconv.ParseUint(string(end), 16, 64)
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
