// Command coredns is the test node's cluster DNS: CoreDNS with only the plugins a cluster's DNS
// needs (kubernetes answers Service and Pod names; forward sends the rest to the host's resolver),
// built the way CoreDNS documents for a custom plugin set.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	dnsserver.Directives = []string{"errors", "health", "ready", "kubernetes", "forward"}
}

func main() {
	coremain.Run()
}
