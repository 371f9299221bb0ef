"""The web app: server-rendered pages (Jinja2 + htmx), cookie sessions, live events."""
