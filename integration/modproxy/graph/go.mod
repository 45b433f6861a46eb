module example.com/modgraph

go 1.24

require (
	github.com/BurntSushi/toml v1.6.0
	github.com/fatih/color v1.19.0
)
