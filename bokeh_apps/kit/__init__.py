"""What a dashboard is built with: the session's identity, the query widget, the runtime handle."""
