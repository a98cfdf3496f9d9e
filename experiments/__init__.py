"""Research drivers as importable modules: `python -m experiments.<name>`."""
