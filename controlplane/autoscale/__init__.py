"""Autoscaling: demand signals, forecasting and scaling policies (pure; no clock, no I/O)."""
