"""The Flask site: blueprints (auth, dashboards, api), error pages, templates."""
