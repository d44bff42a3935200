"""The operator console: an HTTP API, live events, a dashboard and Prometheus metrics.

    echoctl up                       # starts it too, on 127.0.0.1:8765
    echoctl serve --host 0.0.0.0 --tls-cert c.pem --tls-key k.pem   # alone

Layout: `app` (the ASGI app: routes, auth, errors), `api` (/api/v1), `auth` (the
token), `events` (one LISTEN connection fanned out over SSE), `metrics`
(/metrics), `data` (the one seam to the organisation: no SQL here), `server`
(uvicorn under anyio), `top` (`echoctl top`), `static/` (the dashboard: plain
HTML, CSS and ES modules, no build step, nothing fetched from the internet).
"""
