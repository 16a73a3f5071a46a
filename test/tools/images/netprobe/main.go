// Command netprobe is the test node's packet-level probe. "netprobe serve PORT..." answers on
// TCP and UDP on each PORT with its hostname; "netprobe connect tcp|udp HOST:PORT" exits 0 when that
// answer arrives within two seconds and 1 when it does not (refused, dropped or timed out),
// printing what happened, so a test asserts on a real connection outcome for both protocols.
// "netprobe connect http HOST:PORT" does the same for an HTTP server (any HTTP response counts).
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

const timeout = 2 * time.Second

func main() {
	switch {
	case len(os.Args) >= 3 && os.Args[1] == "serve":
		for _, port := range os.Args[2:] {
			serve(port)
		}
		select {}
	case len(os.Args) == 4 && os.Args[1] == "connect":
		if err := connect(os.Args[2], os.Args[3]); err != nil {
			fmt.Println("FAILED", err)
			os.Exit(1)
		}
	default:
		fmt.Fprintln(os.Stderr, "usage: netprobe serve PORT... | netprobe connect tcp|udp|http HOST:PORT")
		os.Exit(2)
	}
}

func serve(port string) {
	name, _ := os.Hostname()
	answer := []byte(name + "\n")
	listener, err := net.Listen("tcp", ":"+port)
	if err != nil {
		fail(err)
	}
	packets, err := net.ListenPacket("udp", ":"+port)
	if err != nil {
		fail(err)
	}
	go answerPackets(packets, answer)
	go acceptConnections(listener, answer)
}

func answerPackets(packets net.PacketConn, answer []byte) {
	buf := make([]byte, 512)
	for {
		_, from, err := packets.ReadFrom(buf)
		if err == nil {
			_, _ = packets.WriteTo(answer, from)
		}
	}
}

func acceptConnections(listener net.Listener, answer []byte) {
	for {
		conn, err := listener.Accept()
		if err != nil {
			continue
		}
		_, _ = conn.Write(answer)
		_ = conn.Close()
	}
}

func connect(network, address string) error {
	if network == "http" {
		client := http.Client{Timeout: timeout}
		res, err := client.Get("http://" + address + "/")
		if err != nil {
			return err
		}
		defer res.Body.Close()
		fmt.Println("OK", res.Status)
		return nil
	}
	conn, err := net.DialTimeout(network, address, timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if network == "udp" {
		if _, err := conn.Write([]byte("probe\n")); err != nil {
			return err
		}
	}
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	if err != nil {
		return err
	}
	fmt.Print("OK ", string(buf[:n]))
	return nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
