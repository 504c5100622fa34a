package flags

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// MaxFileSize bounds what is read of a flag file: a real one is a few
// kilobytes, and a path that reads forever (a symbolic link to
// /dev/zero) must not grow memory until the process dies.
const MaxFileSize = 1 << 20

// ReadFile reads the flag file at path, which must be a regular file, or
// a symbolic link to one, of at most MaxFileSize bytes, and returns its
// real path (links resolved) and content. Anything else is an error at
// once, never a wait: a named pipe would block the read until a writer
// came (and with it every later poll, so no rollback would apply), a
// device may never end, a directory or socket is no file. The file is
// opened without blocking and checked again once open, in case the path
// was swapped between the check and the open.
func ReadFile(path string) (string, []byte, error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", nil, err
	}
	info, err := os.Stat(real)
	if err != nil {
		return "", nil, err
	}
	if err := regularFile(path, info); err != nil {
		return "", nil, err
	}
	f, err := os.OpenFile(real, os.O_RDONLY|openNonBlocking, 0)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	if info, err = f.Stat(); err != nil {
		return "", nil, err
	}
	if err := regularFile(path, info); err != nil {
		return "", nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return "", nil, err
	}
	if len(data) > MaxFileSize {
		return "", nil, fmt.Errorf("%s is larger than %d bytes (1 MiB), too large for a flag file", path, MaxFileSize)
	}
	return real, data, nil
}

// regularFile says what path is when it is not a regular file.
func regularFile(path string, info os.FileInfo) error {
	if info.Mode().IsRegular() {
		return nil
	}
	what := "something else"
	switch t := info.Mode().Type(); {
	case t&os.ModeDir != 0:
		what = "a directory"
	case t&os.ModeDevice != 0, t&os.ModeCharDevice != 0:
		what = "a device"
	case t&os.ModeNamedPipe != 0:
		what = "a named pipe"
	case t&os.ModeSocket != 0:
		what = "a socket"
	}
	return fmt.Errorf("%s is %s, not a regular file", path, what)
}
