"""The web portal served by the gateway: patient, institution and auditor pages (see :mod:`.pages`)."""

from gateway.portal.pages import STATIC_DIR, router

__all__ = ["STATIC_DIR", "router"]
