"""The fleet: the nodes this control plane knows, their models and their health."""
