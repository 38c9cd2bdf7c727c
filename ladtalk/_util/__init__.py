"""Small shared helpers: atomic writes, the JSON policy, devices, paths, choices."""
