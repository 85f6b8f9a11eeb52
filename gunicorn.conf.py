"""gunicorn settings for the site. Hooks are one line each; the logic is in app/serving/hooks.py."""
import importlib
import os

from app import logs
from app.serving import hooks


def code():
    """app.serving.hooks as this process has it: a worker reads our code again after the fork."""
    return importlib.import_module("app.serving.hooks")


# The site's validated settings (app/config.py): a bad or missing value stops gunicorn here,
# naming the variable, before any worker starts.
settings = hooks.check_settings()
wsgi_app = "wsgi:app"
bind = settings.gunicorn_bind
workers = settings.web_concurrency
# gthread: Flask requests on threads, the Bokeh server on its own daemon thread and loop.
# Not gevent/eventlet: Tornado does not survive their monkey-patching.
worker_class = "gthread"
threads = settings.gunicorn_threads
# A worker takes a connection only when a thread is free for it, and closes it after the
# response: the shared listen socket is then the queue, and an idle worker serves the next
# request. gthread's default (accept up to 1000, keep them alive) let one worker take 104
# of a burst of 200 page loads while another took 12 (make bench, load (b)).
worker_connections = threads
keepalive = 0
# No preload of the app: each worker binds its own Bokeh port after the fork, and loads our
# code from disk (a rolling restart deploys it). The master preloads the libraries instead
# (hooks.preload_libraries).
preload_app = False
graceful_timeout = 15
timeout = 60
accesslog = "-"
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms'  # path only: no query strings in logs
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
# Every logger of the workers (app, bokeh_apps, Bokeh, Tornado), not only gunicorn's: app/logs.py.
logconfig_dict = logs.config(loglevel)
proc_name = "happiness"
# gunicorn 24+ opens a control socket at one fixed per-user path; several sites on one host
# (tests, `make run`, scaled app hosts) would fight over it, and nothing here uses it.
control_socket_disable = True


def on_starting(server):
    hooks.master_starting()


def post_fork(server, worker):
    hooks.load_code_from_disk()


def post_worker_init(worker):
    code().worker_started()


def worker_exit(server, worker):
    code().stop_worker_services()


def child_exit(server, worker):
    hooks.forget_worker(worker.pid)
