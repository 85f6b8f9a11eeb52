"""The Flask site. create_app() reads as the table of contents of the site."""
from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from app.config import Settings
from app.database import sqlalchemy_url


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(__name__, template_folder="web/templates", static_folder="web/static")
    configure(app, settings)
    register_request_ids(app)
    register_extensions(app)
    register_blueprints(app)
    register_error_handlers(app)
    register_security_headers(app)
    register_metrics(app)
    return app


def configure(app: Flask, settings: Settings) -> None:
    app.config.update(
        SETTINGS=settings,
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SECURE=settings.secure_cookies,
        MAX_CONTENT_LENGTH=64 * 1024,
        SQLALCHEMY_DATABASE_URI=sqlalchemy_url(settings.database_url),
        # One connection per gthread thread, plus headroom for bursts; checked on checkout, so
        # a restarted PostgreSQL costs one failed request at most.
        SQLALCHEMY_ENGINE_OPTIONS={"pool_size": settings.gunicorn_threads, "max_overflow": 4, "pool_pre_ping": True},
    )
    # nginx sets X-Forwarded-For/-Proto/-Host; embed URLs must use what the browser sees.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)  # type: ignore[method-assign]


def register_request_ids(app: Flask) -> None:
    from app.web.request_ids import init_app

    init_app(app)


def register_extensions(app: Flask) -> None:
    from app.extensions import csrf, db, login_manager

    db.init_app(app)
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please log in to see your dashboards."


def register_blueprints(app: Flask) -> None:
    from app.web.admin import bp as admin_bp
    from app.web.api import bp as api_bp
    from app.web.auth import bp as auth_bp
    from app.web.dashboards import bp as dashboards_bp

    app.register_blueprint(auth_bp)
    app.register_blueprint(dashboards_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(admin_bp)


def register_security_headers(app: Flask) -> None:
    from app.web.headers import init_app

    init_app(app)


def register_metrics(app: Flask) -> None:
    from app.web.metrics import init_app

    init_app(app)


def register_error_handlers(app: Flask) -> None:
    from app.web.errors import init_app

    init_app(app)
