package testserver

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes the server exit if the test binary dies without stopping it.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
