"""The web portal served by the gateway: patient, institution and auditor pages (see :mod:`.pages`)."""

from gateway.portal.pages import router

__all__ = ["router"]
