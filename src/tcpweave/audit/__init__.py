"""Accuracy metrics of forensic reassembly, per-packet verification, cross-tool compare."""
