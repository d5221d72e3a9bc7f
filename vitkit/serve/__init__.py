"""``vitkit serve``: an HTTP server for a checkpoint or an exported file (needs the ``serve`` extra).

It sits on the inference layer (``vitkit.inference``, ``vitkit.data.images.eval_image``) and imports no
training code: a request's image takes the same path to the model as a file given to ``vitkit predict``.

    from vitkit.serve import ServeOptions, create_app, open_model
    app = create_app(open_model("runs/demo"), ServeOptions(max_batch=8))   # any ASGI server runs it
"""

__all__ = ["ServeOptions", "ServedModel", "create_app", "open_model", "serve"]


def __getattr__(name: str):  # FastAPI and friends load only when a server is made
    if name in ("ServeOptions", "create_app", "serve"):
        from vitkit.serve import app

        return getattr(app, name)
    if name in ("ServedModel", "open_model"):
        from vitkit.serve import backends

        return getattr(backends, name)
    raise AttributeError(name)
