"""PyTorch golden model: integer references that the RTL must match bit for bit."""
