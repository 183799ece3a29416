"""Discrete-event simulation of autoscaling policies on recorded or synthetic traces."""
