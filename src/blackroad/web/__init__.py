"""The browser desktop: static ES modules and styles served as files (no build step, no CDN).

``routes.py`` serves them, and the allowlisted files of the npm packages the
desktop uses (``vendor.py``); ``static/`` holds the page, the shell, the API
helper and one module per app (the contract is at the top of ``static/shell.js``).
"""
