"""GET /metrics (Prometheus text, every worker of this host summed) and the Flask request timer."""
from flask import Blueprint, Flask

bp = Blueprint("metrics", __name__)

from app.web.metrics import routes  # noqa: E402


def init_app(app: Flask) -> None:
    # First of the before_request functions: a request another one refuses (a CSRF failure,
    # say) is still timed.
    app.before_request_funcs.setdefault(None, []).insert(0, routes.start_timer)
    app.after_request(routes.observe_request)
    app.register_blueprint(bp)
