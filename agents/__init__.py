"""Tokenfab node agent."""
