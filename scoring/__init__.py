"""The numeric core of placement: GPU inventory as arrays and the fit, score and
pick kernels (numba, with a numpy twin).  No I/O and no Kubernetes objects."""
