"""Tasks: the embedded Huey queue and consumer, the registry of core and plugin tasks, and the run journal."""
