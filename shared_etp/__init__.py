"""The Energy Trading Protocol: messages, canonical CBOR frames, HMAC, replay, topics.

Import from the submodules (shared_etp.frame, .schema, .topics, ...): the package itself imports
nothing, so a board only pays RAM for the modules it uses.
"""

__all__ = ["cbor", "compat", "errors", "frame", "legacy", "replay", "schema", "topics"]
