//go:build tools

// Package tools pins kube-router, whose network policy controller enforces NetworkPolicy on the test node.
package tools

import (
	_ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
)
