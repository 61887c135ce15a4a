"""The clipboard engine: the YAML document handed from silo to silo, the
pipeline runner that hands it over, and the store that remembers every hand-over.

Nothing here knows about chat; ``bot/`` drives it and ``workers/`` are run by it.
"""
