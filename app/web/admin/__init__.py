"""The admin console: one page for the whole site (every host and worker), live, with a
Cancel for each query in flight. Admins only: members and leads get 403."""
from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/admin")

from app.web.admin import routes  # noqa: E402,F401
