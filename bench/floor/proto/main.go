// Command proto is the least a GOCACHEPROG can be: a local cache behind the
// protocol and nothing else. One goroutine answers each request in turn; a
// get is one small file read and one stat, a put writes the body as it
// arrives. No verification, no temp files, no index, no stats, no remote:
// whatever a real helper adds on a local-warm build is measured against
// this.
//
//	GOCACHEPROG="go run ./bench/floor/proto -dir DIR" go build std
//
// (build it first: `go build -o /tmp/proto ./bench/floor/proto`, so the
// measured build does not compile it.)
package main

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

type request struct {
	ID       int64
	Command  string
	ActionID []byte `json:",omitempty"`
	OutputID []byte `json:",omitempty"`
	BodySize int64  `json:",omitempty"`
}

type response struct {
	ID            int64
	Err           string     `json:",omitempty"`
	KnownCommands []string   `json:",omitempty"`
	Miss          bool       `json:",omitempty"`
	OutputID      []byte     `json:",omitempty"`
	Size          int64      `json:",omitempty"`
	Time          *time.Time `json:",omitempty"`
	DiskPath      string     `json:",omitempty"`
}

func main() {
	dir := flag.String("dir", "", "the cache directory (created if missing)")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "proto: -dir is required")
		os.Exit(2)
	}
	root, err := filepath.Abs(*dir)
	if err == nil {
		err = os.MkdirAll(root, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "proto:", err)
		os.Exit(1)
	}
	in := json.NewDecoder(bufio.NewReaderSize(os.Stdin, 64<<10))
	w := bufio.NewWriter(os.Stdout)
	out := json.NewEncoder(w)
	send := func(r *response) {
		out.Encode(r)
		w.Flush()
	}
	send(&response{ID: 0, KnownCommands: []string{"get", "put", "close"}})
	for {
		var req request
		if err := in.Decode(&req); err != nil {
			return // stdin closed
		}
		r := &response{ID: req.ID}
		switch req.Command {
		case "get":
			get(root, &req, r)
		case "put":
			var body []byte
			if req.BodySize > 0 {
				if err := in.Decode(&body); err != nil {
					r.Err = err.Error()
					send(r)
					return
				}
			}
			put(root, &req, body, r)
		case "close":
			send(r)
			return
		default:
			r.Err = "unknown command " + req.Command
		}
		send(r)
	}
}

func path(root string, id []byte, suffix string) string {
	h := hex.EncodeToString(id)
	return filepath.Join(root, h[:2], h+suffix)
}

// An action file holds "<output hex> <size> <unix nanos>".
func get(root string, req *request, r *response) {
	b, err := os.ReadFile(path(root, req.ActionID, "-a"))
	f := strings.Fields(string(b))
	if err != nil || len(f) != 3 {
		r.Miss = true
		return
	}
	out, err1 := hex.DecodeString(f[0])
	size, err2 := strconv.ParseInt(f[1], 10, 64)
	nanos, err3 := strconv.ParseInt(f[2], 10, 64)
	p := path(root, out, "-d")
	fi, err4 := os.Stat(p)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || fi.Size() != size {
		r.Miss = true
		return
	}
	t := time.Unix(0, nanos)
	r.OutputID, r.Size, r.Time, r.DiskPath = out, size, &t, p
}

func put(root string, req *request, body []byte, r *response) {
	p := path(root, req.OutputID, "-d")
	a := path(root, req.ActionID, "-a")
	line := fmt.Sprintf("%x %d %d\n", req.OutputID, len(body), time.Now().UnixNano())
	err := os.MkdirAll(filepath.Dir(p), 0o755)
	if err == nil {
		err = os.WriteFile(p, body, 0o644)
	}
	if err == nil {
		err = os.MkdirAll(filepath.Dir(a), 0o755)
	}
	if err == nil {
		err = os.WriteFile(a, []byte(line), 0o644)
	}
	if err != nil {
		r.Err = err.Error()
		return
	}
	r.DiskPath = p
}
