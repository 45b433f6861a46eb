// Command floor measures the least a remote-warm `go build std` can cost on
// this machine for any GOCACHEPROG that writes and verifies what cmd/go will
// stat: it copies a warm GOCACHE's files into an empty directory (read,
// sha256, write to a temp name, rename, as a helper must), while `go build
// std` runs at the same time on the warm cache itself. No network, no
// decompression, and the build never waits for a file: a real helper can
// only be slower.
//
//	python3 bench/run.py floors   (builds it and runs it on a warm GOCACHE of its own)
//	go run bench/floor/main.go -cache "$(go env GOCACHE)" -runs 5
package main

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

func main() {
	cache := flag.String("cache", "", "a warm GOCACHE (go build std already run with it)")
	runs := flag.Int("runs", 5, "runs of each measurement")
	workers := flag.Int("workers", 2, "copying goroutines")
	flag.Parse()
	if *cache == "" {
		fmt.Fprintln(os.Stderr, "floor: -cache is required")
		os.Exit(2)
	}
	var files []string
	err := filepath.WalkDir(*cache, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
	build(*cache) // page cache warm
	var alone, copying, both []float64
	for i := 0; i < *runs; i++ {
		alone = append(alone, timed(func() { build(*cache) }))
		copying = append(copying, timed(func() { copyAll(*cache, files, *workers) }))
		both = append(both, timed(func() {
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { defer wg.Done(); copyAll(*cache, files, *workers) }()
			build(*cache)
			wg.Wait()
		}))
	}
	fmt.Printf("%d files; medians of %d runs: go build std warm %.3f s; copy+verify alone %.3f s; both at once %.3f s (%.2fx the build)\n",
		len(files), *runs, median(alone), median(copying), median(both), median(both)/median(alone))
}

func build(cache string) {
	cmd := exec.Command("go", "build", "std")
	cmd.Env = append(os.Environ(), "GOCACHE="+cache, "GOCACHEPROG=")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "floor: go build std:", err)
		os.Exit(1)
	}
}

// copyAll copies files into a new directory beside the cache, as a helper
// would: read, hash, write a temp file, rename. The directory is left in
// place (deleting it would slow the next run's inode allocation on ext4).
func copyAll(cache string, files []string, workers int) {
	dst, err := os.MkdirTemp(filepath.Dir(cache), "floor-copy-")
	check(err)
	next := make(chan string)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range next {
				data, err := os.ReadFile(p)
				check(err)
				_ = sha256.Sum256(data)
				rel, _ := filepath.Rel(cache, p)
				out := filepath.Join(dst, rel)
				check(os.MkdirAll(filepath.Dir(out), 0o755))
				check(os.WriteFile(out+".tmp", data, 0o644))
				check(os.Rename(out+".tmp", out))
			}
		}()
	}
	for _, p := range files {
		next <- p
	}
	close(next)
	wg.Wait()
}

func timed(f func()) float64 {
	start := time.Now()
	f()
	return time.Since(start).Seconds()
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}
