"""Reconcile Cloudflare Workers for Platforms dispatch namespaces with a manifest."""

import os

# The settings model uses no pydantic plugin, and looking for plugins reads the
# metadata of every installed distribution at each start: a few milliseconds of
# every run. A value set by the user is kept.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

__version__ = "0.1.0"
