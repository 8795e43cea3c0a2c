"""The local web app (``newsletter serve``): preview, archive, unsubscribe, subscribe, confirm.

``create_app(ctx)`` returns a Starlette app. Pages are Jinja templates in ``templates/web/``
(overridable from ``digest.templates_dir``); every use case comes from :mod:`newsletter.app`.
"""

from newsletter.web.app import create_app

__all__ = ["create_app"]
