"""Reference code exported from `solutions/` by `make build`: never edited by hand (see utils/build.py)."""
