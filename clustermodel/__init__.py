"""The cluster model shared by the extender and the autoscaler.

Quantities, annotation names, custom-resource types, the informer cache and the
Kubernetes client wrapper live here; scheduling and scaling decisions do not.
"""
