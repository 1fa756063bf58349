//go:build tools

// Package etcd pins the etcd server command that hack/build-kube.sh builds so
// that `go mod tidy` keeps all of its dependencies (and go.sum entries).
// It is never compiled (the "tools" build tag is never set).
package etcd

import (
	_ "go.etcd.io/etcd/server/v3"
)
