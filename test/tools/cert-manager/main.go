// Command cert-manager-controller runs cert-manager's issuance controllers for
// the test control plane: the SelfSigned and CA issuers, the certificate
// lifecycle and the ingress-shim (on by default in real installs: an annotated
// Ingress becomes a Certificate), with no webhook, ACME, metrics server or
// leader election.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	controllerpkg "github.com/cert-manager/cert-manager/pkg/controller"

	_ "github.com/cert-manager/cert-manager/pkg/controller/certificate-shim/ingresses"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	_ "github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

var defaultControllers = []string{
	"issuers", "clusterissuers",
	"certificaterequests-approver", "certificaterequests-issuer-ca", "certificaterequests-issuer-selfsigned",
	"certificates-trigger", "certificates-issuing", "certificates-key-manager",
	"certificates-request-manager", "certificates-readiness", "certificates-revision-manager",
	"ingress-shim",
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "path to a kubeconfig")
	clusterResourceNamespace := flag.String("cluster-resource-namespace", "kube-system", "namespace holding the secrets of ClusterIssuers")
	controllers := flag.String("controllers", strings.Join(defaultControllers, ","), "comma-separated controllers to run")
	// cert-manager's own flags and defaults: what an install runs unless its operator raises them.
	limits := clientLimits{}
	flag.Float64Var(&limits.qps, "kube-api-qps", 20, "requests per second to the API server")
	flag.IntVar(&limits.burst, "kube-api-burst", 50, "requests above kube-api-qps in a burst")
	flag.IntVar(&limits.workers, "concurrent-workers", 5, "workers per controller")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *kubeconfig, *clusterResourceNamespace, strings.Split(*controllers, ","), limits); err != nil {
		fmt.Fprintln(os.Stderr, "cert-manager-controller:", err)
		os.Exit(1)
	}
}

type clientLimits struct {
	qps     float64
	burst   int
	workers int
}

func run(ctx context.Context, kubeconfig, clusterResourceNamespace string, names []string, limits clientLimits) error {
	factory, err := controllerpkg.NewContextFactory(ctx, controllerpkg.ContextOptions{
		Kubeconfig:         kubeconfig,
		KubernetesAPIQPS:   float32(limits.qps),
		KubernetesAPIBurst: limits.burst,
		IssuerOptions:      controllerpkg.IssuerOptions{ClusterResourceNamespace: clusterResourceNamespace},
		// cert-manager's own defaults for the shim's flags.
		IngressShimOptions: controllerpkg.IngressShimOptions{
			DefaultIssuerKind:                 "Issuer",
			DefaultIssuerGroup:                "cert-manager.io",
			DefaultAutoCertificateAnnotations: []string{"kubernetes.io/tls-acme"},
		},
		CertificateOptions: controllerpkg.CertificateOptions{
			CertificateRequestMinimumBackoffDuration: 5 * time.Second,
			CertificateRequestMaximumBackoffDuration: time.Minute,
		},
	})
	if err != nil {
		return err
	}

	known := controllerpkg.Known()
	var running []controllerpkg.Interface
	for _, name := range names {
		construct, ok := known[name]
		if !ok {
			return fmt.Errorf("unknown controller %q", name)
		}
		c, err := construct(factory)
		if err != nil {
			return fmt.Errorf("constructing %s: %w", name, err)
		}
		running = append(running, c)
	}

	shared, err := factory.Build()
	if err != nil {
		return err
	}
	shared.SharedInformerFactory.Start(ctx.Done())
	shared.KubeSharedInformerFactory.Start(ctx.Done())
	shared.HTTP01ResourceMetadataInformersFactory.Start(ctx.Done())

	var wg sync.WaitGroup
	for _, c := range running {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Run(limits.workers, ctx); err != nil {
				fmt.Fprintln(os.Stderr, "controller stopped:", err)
			}
		}()
	}
	fmt.Println("cert-manager-controller: running", strings.Join(names, ","))
	wg.Wait()
	return nil
}
