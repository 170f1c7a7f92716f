"""Distillation methods, one module each (see rrdtui.registry for the list and the SPEC format).

This package's own import stays free of torch: the registry reads each module's SPEC from its source
file, which finds the file through this package. The shared parts live in `base`.
"""
