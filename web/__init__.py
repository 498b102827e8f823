"""The browser page's static files (installed as ``zoo.webpage``), copied by ``zoo web``."""
