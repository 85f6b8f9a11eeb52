"""Machine-facing endpoints: health, the worker registry, and writing entries as JSON."""
from flask import Blueprint

bp = Blueprint("api", __name__)

from app.web.api import routes  # noqa: E402,F401
