"""The peer's Flask page: two lines, embedding the Panel app with bokeh.embed.server_document."""
import os

from bokeh.embed import server_document
from flask import Flask, request

app = Flask(__name__)
app.get("/dashboards/<name>")(lambda name: server_document(f"{os.environ['PEER_PANEL_URL']}/{name.replace('-', '_')}",
                                                           arguments=request.args.to_dict()))
