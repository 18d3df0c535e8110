"""One registry of model constructors, filled where they are defined."""

MODELS = {}


def register_model(name):
    """Decorator: registers a constructor ``fn(num_classes=..., **kwargs)``."""

    def wrap(fn):
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered")
        MODELS[name] = fn
        return fn

    return wrap


def build_model(name, **kwargs):
    """Builds the registered model ``name``."""
    if name not in MODELS:
        import difflib
        close = difflib.get_close_matches(str(name), MODELS, n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(f"Unknown model {name!r}.{hint} Known: {sorted(MODELS)}")
    return MODELS[name](**kwargs)


def list_models():
    return sorted(MODELS)
