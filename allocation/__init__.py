"""The allocation core, below the extender and the autoscaler alike.

The ledger (the one writer of who holds which share of which GPU), the
cluster state that feeds it from the cache, and placement configuration.
"""
