"""Kubernetes I/O: the REST client, informers, leader election and events. No decisions."""
