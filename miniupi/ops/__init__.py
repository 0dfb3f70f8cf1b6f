"""Cluster operations: certificates, supervision, the audit, the benchmark and the pytest fixture."""
