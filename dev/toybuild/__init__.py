"""The toy-world model's build (`python -m dev.toybuild.build`) and the sweep that chose its settings."""
