"""Local development stack: dev connections and the `make run` launcher."""
