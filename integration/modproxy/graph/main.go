// Command modgraph is the module integration/modproxy.rs downloads and
// builds through `gocacher serve --modproxy`: a few real modules, one with
// upper-case letters in its path (escaped as !x on the wire and on disk).
package main

import (
	"fmt"

	"github.com/BurntSushi/toml"
	"github.com/fatih/color"
)

func main() {
	var v struct{ Name string }
	if _, err := toml.Decode(`Name = "modproxy"`, &v); err != nil {
		panic(err)
	}
	color.NoColor = true
	fmt.Println(color.New(color.FgGreen).Sprint("hello " + v.Name))
}
