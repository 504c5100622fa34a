package flags

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile replaces the flag file at path with data the way a file that
// credgate (or a flagd daemon) reads at any moment must be replaced: a
// temporary file in the same directory, with the file's mode (and owner,
// where the system lets us: a root shell must not leave credgate a file
// it cannot read), written and synced, then renamed over path, and the
// directory synced so that the rename survives a crash. A reader sees
// the old content or the new, never a part of either; on any error the
// file is left as it was and the temporary file is removed. path must be
// a regular file (resolve a symbolic link first: renaming over the link
// would replace it with a file).
func WriteFile(path string, data []byte) (err error) {
	info, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	// A dot name: editors, flagd and credgate's own reader ignore it,
	// and an interrupted run leaves nothing that looks like a flag file.
	tmp, err := os.CreateTemp(dir, "."+base+".credgate-*")
	if err != nil {
		return fmt.Errorf("cannot create a file next to %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(info.Mode().Perm()); err != nil {
		return fmt.Errorf("setting the mode of %s: %w", tmp.Name(), err)
	}
	keepOwner(tmp, info)
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("renaming over %s: %w", path, err)
	}
	// The content is in place; a directory that cannot be synced only
	// weakens crash safety, it does not undo the change.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
