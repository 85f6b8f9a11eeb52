"""The home page, the mood log form, and the pages that embed Bokeh sessions."""
from flask import Blueprint

bp = Blueprint("dashboards", __name__)

from app.web.dashboards import routes  # noqa: E402,F401
