"""Bundled data (installed as ``zoo.bundled``): names.txt, the default words file."""
