"""Serving a detector over HTTP (extra ``serve``): ``efficientdet serve`` builds these pieces.

* ``app`` — :func:`~.app.create_app`: the versioned API, health, metrics and the page;
* ``batching`` — :class:`~.batching.Batcher`: a bounded queue, dynamic batches on worker threads;
* ``limits`` — body size, upload time, pixels, queue and request time; the API key;
* ``metrics`` — the Prometheus registry ``/metrics`` shows;
* ``server`` — uvicorn with a graceful, draining stop;
* ``static/`` — the page (plain HTML, JS and CSS, no CDN).

Nothing is imported here: ``import efficientdet.serve.app`` needs the extra's packages.
"""
