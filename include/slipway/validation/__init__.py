"""Validation during and after an upgrade: the zero-downtime probe and the latency baseline."""
