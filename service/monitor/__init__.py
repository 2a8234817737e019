"""The live call monitor page's static assets (``index.html``, ``monitor.js``, ``monitor.css``).

Plain HTML, CSS and JavaScript, no build step and nothing loaded from another host; served by
:mod:`service.routes.monitor` at ``/monitor``. The page holds no data: it reads the dialogue API and
``WS /v1/events`` with the API key the user enters.
"""
