//go:build tools

// Package helm pins the helm command that hack/build-kube.sh builds so that
// `go mod tidy` keeps its dependencies (and go.sum entries). Never compiled.
package helm

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
