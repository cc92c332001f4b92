//go:build !linux

package testserver

import "os/exec"

// dieWithParent is a no-op where the platform cannot tie a child's life to its parent.
func dieWithParent(cmd *exec.Cmd) {}
