"""Version-guarded patches of Bokeh and Panel internals, in one place to delete when upstream catches up."""
