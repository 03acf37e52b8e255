"""The embedded local HA cluster: official binaries, certificates, processes, workloads."""
