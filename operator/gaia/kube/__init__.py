"""Gaia on Kubernetes: the kopf operator, its resources and the Jobs it runs."""
