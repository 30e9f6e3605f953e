"""Developer tools that keep the project's generated files in step with its code (not installed)."""
