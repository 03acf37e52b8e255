"""Upgraders: one small protocol per thing that differs by platform (control plane, nodes).

- :mod:`slipway.upgraders.controlplane`: the control-plane protocol and its results.
- :mod:`slipway.upgraders.local_controlplane`: the local HA cluster.
- :mod:`slipway.upgraders.kubeadm`: kubeadm clusters (commands and the privileged pod).
- :mod:`slipway.upgraders.nodes`: node upgraders.
"""
