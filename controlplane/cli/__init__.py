"""The ``tokenfab`` command."""
