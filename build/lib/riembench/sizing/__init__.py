"""Size budgets, cost accounting (parameters, bytes, FLOPs) and packed artifacts on disk."""
