"""Example account-recovery service with a browser capture page (see README.md)."""

from .app import RecoveryService, ServiceConfig, create_app

__all__ = ["RecoveryService", "ServiceConfig", "create_app"]
