"""What each gunicorn worker runs beside Flask: lifecycle hooks, the embedded Bokeh server,
the port registry, embed tags and the prefetch announce."""
