"""Extensions, created unbound; create_app() binds them with init_app()."""
from flask_login import LoginManager

from app.csrf import CSRFProtect
from app.database import Database

db = Database()
login_manager = LoginManager()
csrf = CSRFProtect()
