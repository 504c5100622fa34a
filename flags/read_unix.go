//go:build unix

package flags

import "syscall"

// openNonBlocking keeps an open from waiting: opening a named pipe
// without it waits for a writer.
const openNonBlocking = syscall.O_NONBLOCK
