// Command load puts and gets cache entries against a cache server that
// speaks gocached's HTTP API (gocached, gocacher serve), from -c concurrent
// keep-alive connections, and prints what it measured as one JSON object:
//
//	load -url http://127.0.0.1:31364 -size 1024 -n 20000 -c 16
//
// Every object is random (so no server compresses it), its output ID is its
// SHA-256, and every body that comes back is checked against it: a wrong
// body, a non-2xx status or a transport error counts as an error.
package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

type phase struct {
	Ops       int     `json:"ops"`
	Errors    int64   `json:"errors"`
	Seconds   float64 `json:"seconds"`
	OpsPerSec float64 `json:"ops_per_s"`
	MBPerSec  float64 `json:"mb_per_s"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
	FirstErr  string  `json:"first_error,omitempty"`
}

type object struct {
	action, output string
	data           []byte
}

func main() {
	url := flag.String("url", "", "the server's base URL")
	size := flag.Int("size", 1024, "bytes per object")
	n := flag.Int("n", 10000, "objects to put, then get")
	c := flag.Int("c", 16, "concurrent connections")
	rounds := flag.Int("get-rounds", 2, "times every object is fetched")
	token := flag.String("token", "", "Bearer token, if the server wants one")
	flag.Parse()
	if *url == "" || *size < 1 || *n < 1 || *c < 1 {
		fmt.Fprintln(os.Stderr, "usage: load -url URL [-size BYTES] [-n OBJECTS] [-c CONNS] [-get-rounds N]")
		os.Exit(2)
	}
	// One pool of distinct random bytes; each object is a window into it
	// with its index in front, so n objects need little memory.
	pool := make([]byte, *size+*n)
	rand.Read(pool)
	objs := make([]object, *n)
	for i := range objs {
		data := make([]byte, *size)
		copy(data, pool[i:i+*size])
		copy(data, fmt.Sprintf("%d:", i))
		out := sha256.Sum256(data)
		act := sha256.Sum256(append([]byte("action "), out[:]...))
		objs[i] = object{hex.EncodeToString(act[:]), hex.EncodeToString(out[:]), nil}
		if *size <= 64<<10 {
			objs[i].data = data
		}
	}
	body := func(i int) []byte {
		if objs[i].data != nil {
			return objs[i].data
		}
		data := make([]byte, *size)
		copy(data, pool[i:i+*size])
		copy(data, fmt.Sprintf("%d:", i))
		return data
	}
	client := &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			MaxIdleConnsPerHost: *c,
			DisableCompression:  true,
		},
	}
	auth := func(r *http.Request) {
		if *token != "" {
			r.Header.Set("Authorization", "Bearer "+*token)
		}
	}
	put := func(i int) error {
		o := objs[i]
		req, _ := http.NewRequest("PUT", *url+"/"+o.action+"/"+o.output, bytes.NewReader(body(i)))
		req.ContentLength = int64(*size)
		auth(req)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("PUT: %s", resp.Status)
		}
		return nil
	}
	get := func(i int) error {
		o := objs[i%len(objs)]
		req, _ := http.NewRequest("GET", *url+"/action/"+o.action, nil)
		req.Header.Set("Want-Object", "1")
		auth(req)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		h := sha256.New()
		got, err := io.Copy(h, resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != 200 {
			return fmt.Errorf("GET: %s", resp.Status)
		}
		if got != int64(*size) || hex.EncodeToString(h.Sum(nil)) != o.output {
			return fmt.Errorf("GET: a wrong body (%d bytes)", got)
		}
		return nil
	}
	report := map[string]phase{
		"put": run(*n, *c, *size, put),
		"get": run(*n**rounds, *c, *size, get),
	}
	json.NewEncoder(os.Stdout).Encode(report)
}

// run calls op for 0..ops-1 from c goroutines and measures it.
func run(ops, c, size int, op func(int) error) phase {
	var next, errs atomic.Int64
	var first atomic.Value
	lat := make([][]time.Duration, c)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= ops {
					return
				}
				t := time.Now()
				if err := op(i); err != nil {
					errs.Add(1)
					first.CompareAndSwap(nil, err.Error())
				}
				lat[w] = append(lat[w], time.Since(t))
			}
		}(w)
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	all := slices.Concat(lat...)
	slices.Sort(all)
	ms := func(q float64) float64 {
		return float64(all[int(q*float64(len(all)-1))].Microseconds()) / 1000
	}
	p := phase{
		Ops: ops, Errors: errs.Load(), Seconds: round(secs),
		OpsPerSec: round(float64(ops) / secs), MBPerSec: round(float64(ops) * float64(size) / secs / 1e6),
		P50Ms: ms(0.5), P99Ms: ms(0.99),
	}
	if f, ok := first.Load().(string); ok {
		p.FirstErr = f
	}
	return p
}

func round(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }
