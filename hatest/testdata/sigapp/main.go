// Command sigapp is a test program for hatest's Process helper: it prints
// its environment's GREETING, then exits with code 3 on SIGTERM.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM)
	fmt.Println("greeting:", os.Getenv("GREETING"))
	fmt.Fprintln(os.Stderr, "ready")
	<-ch
	fmt.Print("got SIGTERM")
	os.Exit(3)
}
