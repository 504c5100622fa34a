//go:build unix

package flags

import (
	"os"
	"syscall"
)

// keepOwner gives f the owner of the file it replaces, when the process
// may (root may; anyone else can only keep their own).
func keepOwner(f *os.File, like os.FileInfo) {
	if st, ok := like.Sys().(*syscall.Stat_t); ok {
		_ = f.Chown(int(st.Uid), int(st.Gid))
	}
}
