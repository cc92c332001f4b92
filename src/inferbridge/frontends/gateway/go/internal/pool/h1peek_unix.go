//go:build linux || darwin || freebsd || netbsd || openbsd

package pool

import "syscall"

// peekAlive looks at a pooled connection's socket without reading from it: closed by
// the server (end of file, or an error such as a reset) means not alive. Bytes waiting
// on a plain connection are a response nobody asked for, so not alive either; on a TLS
// one they may be a session ticket, which the next read consumes.
func peekAlive(raw syscall.RawConn, isTLS bool) bool {
	alive := true
	var buf [1]byte
	err := raw.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK || err == syscall.EINTR:
		case err != nil || n == 0:
			alive = false
		default:
			alive = isTLS
		}
		return true // never wait for the socket to be readable
	})
	return alive && err == nil
}
