"""A local control plane for development, demos and end-to-end tests.

Real etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as
processes on 127.0.0.1 next to ``tfsched serve``, with fake (kubelet-less)
GPU nodes.  Nothing here is needed by tfsched at run time.
"""
