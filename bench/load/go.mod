module gocacher.invalid/bench/load

go 1.24
