"""tfsched: a GPU-aware kube-scheduler extender with a co-located autoscaler."""
