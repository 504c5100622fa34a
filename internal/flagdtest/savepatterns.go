package flagdtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// SavePattern is one way an operator or a tool saves the flag file.
type SavePattern struct {
	Name string
	Save func(content string)
}

// SavePatterns are the ways of saving the flag file at path that once
// left flagd's watcher following nothing, plus the two that always
// worked: each must apply.
func SavePatterns(t testing.TB, path string) []SavePattern {
	write := func(p, content string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}
	return []SavePattern{
		{"rename over the file", func(c string) {
			write(path+".tmp", c)
			run("mv", path+".tmp", path)
		}},
		{"write in place", func(c string) { write(path, c) }},
		{"editor-style backup rename", func(c string) {
			run("mv", path, path+"~")
			write(path, c)
			run("rm", path+"~")
		}},
		{"move away and back", func(c string) {
			run("mv", path, path+".away")
			time.Sleep(300 * time.Millisecond)
			write(path+".away", c)
			run("mv", path+".away", path)
		}},
		{"delete then create", func(c string) {
			run("rm", path)
			time.Sleep(300 * time.Millisecond)
			write(path, c)
		}},
		{"symlink swap", func(c string) {
			// The Kubernetes ConfigMap way: the name is a link whose
			// target directory is swapped atomically.
			v := filepath.Join(filepath.Dir(path), fmt.Sprintf("..data-%d", time.Now().UnixNano()))
			if err := os.Mkdir(v, 0o755); err != nil {
				t.Fatal(err)
			}
			write(filepath.Join(v, "flags.json"), c)
			run("ln", "-sfn", filepath.Join(v, "flags.json"), path+".link")
			run("mv", "-T", path+".link", path)
		}},
	}
}
