"""Extensions, created unbound; create_app() binds them with init_app()."""
from flask_login import LoginManager
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect

from app.models import Base

# The engine and the request-scoped session, per app (Flask-SQLAlchemy keeps them in
# app.extensions, so several apps in one process, as in tests, do not share one engine).
db = SQLAlchemy(model_class=Base)
login_manager = LoginManager()
# Every POST needs the form's csrf_token or an X-CSRFToken header; tokens are signed with
# SECRET_KEY and expire (WTF_CSRF_TIME_LIMIT).
csrf = CSRFProtect()
