"""PyTorch cases: one module per public report (or a few closely related reports)."""
