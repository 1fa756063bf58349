"""The kube-scheduler HTTP extender: wire models, handlers, the allocation
ledger and bind."""
