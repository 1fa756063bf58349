//go:build tools

// Package kube pins the Kubernetes commands that hack/build-kube.sh builds so
// that `go mod tidy` keeps all of their dependencies (and go.sum entries).
// It is never compiled (the "tools" build tag is never set).
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
