"""Reconcile Cloudflare Workers for Platforms dispatch namespaces with a manifest."""

__version__ = "0.1.0"
