"""A plugin that fails on import: it needs a module that is not installed."""

import layerzoo_missing_dependency  # noqa: F401
