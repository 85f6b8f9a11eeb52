"""Extensions, created unbound; create_app() binds them with init_app()."""
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect

from app.database import Database

db = Database()
login_manager = LoginManager()
# Every POST needs the form's csrf_token or an X-CSRFToken header; tokens are signed with
# SECRET_KEY and expire (WTF_CSRF_TIME_LIMIT).
csrf = CSRFProtect()
