"""Security headers on every response of the app's server (pages, login, static files, errors).

:class:`SecurityHeaders` is a Tornado output transform, so it applies to every handler Bokeh and
Panel register without touching them. The Content-Security-Policy allows only this site's
scripts, styles, images and websocket. Bokeh's page bootstrap is an inline ``<script>``, so
``script-src`` needs ``'unsafe-inline'`` (and BokehJS compiles a few functions at run time:
``'unsafe-eval'``, and loads a worker script from a ``blob:`` URL); inline event handlers (``onerror=``, ``onclick=``) stay forbidden by
``script-src-attr 'none'``, which is what stored markup would need. No framing, no plugins, no
foreign ``<base>``, forms post only here.
"""

from __future__ import annotations

from tornado.httputil import HTTPHeaders
from tornado.web import OutputTransform

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline' 'unsafe-eval' blob:",
        "script-src-attr 'none'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


class SecurityHeaders(OutputTransform):
    """Adds :data:`SECURITY_HEADERS` to every response (``transforms=[SecurityHeaders]``)."""

    def transform_first_chunk(
        self, status_code: int, headers: HTTPHeaders, chunk: bytes, finishing: bool
    ) -> tuple[int, HTTPHeaders, bytes]:
        for name, value in SECURITY_HEADERS.items():
            headers[name] = value
        return status_code, headers, chunk
