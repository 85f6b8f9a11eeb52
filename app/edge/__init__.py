"""The edge: nginx and the watcher that renders its routes from the worker registry."""
