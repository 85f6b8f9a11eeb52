"""Machine-facing endpoints: health and the worker registry."""
from flask import Blueprint

bp = Blueprint("api", __name__)

from app.web.api import routes  # noqa: E402,F401
