"""Degradations, robustness numbers, Lipschitz estimates, the certificate (docs/robustness.md)."""
