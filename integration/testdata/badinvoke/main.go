// Command badinvoke must not compile: it shows the mistakes client.Invoke turns into compile errors.
package main

import (
	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/examples/demo"
)

func main() {
	var pool *client.Pool
	client.Invoke(pool, (*demo.DataProcessor).Process, "forty-two") // Process takes an int
	client.Invoke(pool, (*demo.DataProcessor).Proces, 42)           // no such method
	f := client.Invoke(pool, (*demo.DataProcessor).Process, 42)
	var s *client.Future[string] = f // Process returns an int
	_ = s
}
