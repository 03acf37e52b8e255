"""Cluster operations on top of the official Kubernetes client."""
