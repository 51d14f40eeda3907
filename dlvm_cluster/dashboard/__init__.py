"""`dlvm dashboard`: a local, read-only web page about every cluster (server.py serves it,
live.py keeps its data current, page/ is the page itself: plain HTML, CSS and JavaScript)."""
