"""A small Flask demo around ``Predictor``: an HTML page and a JSON API.

Routes: ``GET /`` (the page), ``POST /api/predict``, ``POST /api/embed``, ``GET /health`` (and
``/healthz``, the same, for container health checks). Every error is JSON ``{"error": "..."}`` naming
what is wrong and where, without echoing what the client sent.

Usage::

    python -m mtst serve [--checkpoint DIR] [--host 127.0.0.1] [--port 8000] [--device cpu]

The server is Flask's threaded development server, which is enough for a demo on loopback;
``Predictor`` serialises the forward passes anyway.
"""

import json
import logging
import signal
import threading
from typing import Any

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from ..predict import Predictor

logger = logging.getLogger(__name__)

MAX_TEXTS = 32
MAX_CHARS = 50_000
MAX_REQUEST_BYTES = 2 * 1024 * 1024
"""Room for 32 texts of 50,000 ASCII characters, or one of 50,000 escaped non-ASCII ones."""

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                "connect-src 'self'; object-src 'none'; base-uri 'none'; "
                                "form-action 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class RequestError(Exception):
    """A client error: ``message`` goes back as JSON with ``status``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


def read_body(max_bytes: int) -> bytes:
    """The request body, or a 413 ``RequestError`` when it is larger than ``max_bytes``."""
    if not request.environ.get("wsgi.input_terminated"):  # Content-Length: MAX_CONTENT_LENGTH answers 413
        return request.get_data(cache=False)
    # Chunked: Werkzeug would silently cut the body at the limit; read one byte more to know.
    data = request.environ["wsgi.input"].read(max_bytes + 1)
    if len(data) > max_bytes:
        raise RequestError(f"request body is larger than the limit of {max_bytes} bytes", 413)
    return data


def read_json_object(max_bytes: int) -> dict:
    """The request body as a JSON object, or a ``RequestError`` saying why it is not one."""
    if not request.is_json:
        raise RequestError("Content-Type must be application/json", 415)
    data = read_body(max_bytes)
    try:
        body = json.loads(data)
    except UnicodeDecodeError:
        raise RequestError("request body is not valid UTF-8") from None
    except ValueError as e:  # JSONDecodeError: says where (line, column), never what
        raise RequestError(f"request body is not valid JSON: {e}") from None
    except RecursionError:
        raise RequestError("request body is not valid JSON: nested too deeply") from None
    if not isinstance(body, dict):
        raise RequestError(f"request body must be a JSON object, got {_json_type(body)}")
    return body


def parse_texts(body: dict, max_texts: int, max_chars: int, extra_fields: tuple[str, ...] = ()) -> list[str]:
    """The texts of a request body holding either ``text`` (a string) or ``texts`` (a list of strings).

    Raises:
        RequestError: naming the field (``texts[2]``) and the problem, 413 for the size limits. The
            message never repeats what the client sent (field names included).
    """
    unknown = set(body) - {"text", "texts", *extra_fields}
    if unknown:
        expected = ", ".join(repr(f) for f in ("text", "texts", *extra_fields))
        raise RequestError(f"{len(unknown)} unknown field(s); the fields are {expected}")
    if "text" in body and "texts" in body:
        raise RequestError("give either 'text' or 'texts', not both")
    if "text" in body:
        named = [("text", body["text"])]
    elif "texts" in body:
        texts = body["texts"]
        if not isinstance(texts, list):
            raise RequestError(f"texts must be a list of strings, got {_json_type(texts)}")
        if not texts:
            raise RequestError("texts must not be empty")
        if len(texts) > max_texts:
            raise RequestError(f"too many texts: {len(texts)} given, the limit is {max_texts}", 413)
        named = [(f"texts[{i}]", t) for i, t in enumerate(texts)]
    else:
        raise RequestError("missing field: give 'text' (a string) or 'texts' (a list of strings)")
    for name, text in named:
        if not isinstance(text, str):
            raise RequestError(f"{name} must be a string, got {_json_type(text)}")
        if not text.strip():
            raise RequestError(f"{name} is empty or only whitespace")
        if len(text) > max_chars:
            raise RequestError(f"{name} has {len(text)} characters; the limit is {max_chars}", 413)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # JSON can escape half a UTF-16 pair ("\ud800"); no tokenizer takes it
            raise RequestError(f"{name} holds a lone surrogate (an unpaired \\ud800-\\udfff escape), "
                               "which is not a character; send valid Unicode") from None
    return [text for _, text in named]


def parse_normalize(body: dict) -> bool:
    """The optional ``normalize`` flag (default true)."""
    normalize = body.get("normalize", True)
    if not isinstance(normalize, bool):
        raise RequestError(f"normalize must be true or false, got {_json_type(normalize)}")
    return normalize


def _json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "array",
             dict: "object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def create_app(predictor: Predictor, *, max_texts: int = MAX_TEXTS, max_chars: int = MAX_CHARS,
               max_request_bytes: int = MAX_REQUEST_BYTES) -> Flask:
    """The demo app around one shared ``predictor``.

    Args:
        predictor: serves every request (it is thread-safe).
        max_texts: most texts in one request.
        max_chars: most characters (code points) in one text; longer inputs get a 413.
        max_request_bytes: body size cap (``MAX_CONTENT_LENGTH``); larger bodies get a 413.

    Returns:
        The Flask app.
    """
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = max_request_bytes
    app.json.sort_keys = False  # keep the model's label order in "probabilities"
    limits = {"max_texts": max_texts, "max_chars": max_chars, "max_seq_length": predictor.max_seq_length}

    @app.get("/")
    def index():
        return render_template("index.html", trained=predictor.trained, mode=predictor.mode, **limits)

    @app.get("/health")
    @app.get("/healthz")
    def health():
        return {"status": "ok", "trained": predictor.trained}

    @app.post("/api/predict")
    def predict():
        texts = parse_texts(read_json_object(max_request_bytes), max_texts, max_chars)
        return {"results": predictor.predict(texts)}

    @app.post("/api/embed")
    def embed():
        body = read_json_object(max_request_bytes)
        texts, normalize = parse_texts(body, max_texts, max_chars, ("normalize",)), parse_normalize(body)
        embeddings = predictor.embed(texts, normalize=normalize)
        return {"embeddings": embeddings, "dim": len(embeddings[0]), "normalized": normalize}

    _register_error_handlers(app, max_request_bytes)

    @app.after_request
    def add_security_headers(response):
        response.headers.update(SECURITY_HEADERS)
        if request.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
            response.headers["X-Mtst-Mode"] = predictor.mode
        return response

    return app


def _register_error_handlers(app: Flask, max_request_bytes: int) -> None:
    """Every error leaves as JSON ``{"error": ...}``; unexpected ones are logged, not leaked."""

    @app.errorhandler(RequestError)
    def request_error(e: RequestError):
        return jsonify(error=e.message), e.status

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        if e.code == 413:
            return jsonify(error=f"request body is larger than the limit of {max_request_bytes} bytes"), 413
        return jsonify(error=f"{e.name}: {e.description}"), e.code

    @app.errorhandler(Exception)
    def internal_error(e: Exception):
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify(error="internal server error (see the server log)"), 500


def load_predictor(checkpoint: str | None = None, device: str = "cpu", precision: str = "auto") -> Predictor:
    """A trained checkpoint folder, or the base model with untrained heads (``trained=False``).

    ``precision="auto"``: the fast mode (bf16 autocast) where the CPU or GPU computes bf16 natively, else exact
    fp32; the page and every API response (``X-Mtst-Mode``) say which.
    """
    if checkpoint:
        logger.info("loading trained checkpoint %s", checkpoint)
        predictor = Predictor.from_pretrained(checkpoint, device=device, precision=precision)
    else:
        from ..config import ModelConfig
        from ..model import MultiTaskSentenceTransformer

        logger.warning("no checkpoint given: base model with UNTRAINED heads (predictions are random)")
        predictor = Predictor(MultiTaskSentenceTransformer.from_config(ModelConfig()), device=device, trained=False,
                              precision=precision)
    logger.info("the model runs in %s mode", predictor.mode)
    return predictor


class RequestHandler(WSGIRequestHandler):
    """Werkzeug's handler, answering ``Server: mtst`` instead of the Werkzeug and Python versions."""

    def version_string(self) -> str:
        """The ``Server`` header: the name only, no versions."""
        return "mtst"


def serve_in_background(app: Flask, host: str = "127.0.0.1", port: int = 0) -> BaseWSGIServer:
    """Serve ``app`` from a daemon thread (port 0: a free one); stop with ``server.shutdown()``."""
    server = make_server(host, port, app, threaded=True, request_handler=RequestHandler)
    threading.Thread(target=server.serve_forever, name="mtst-app", daemon=True).start()
    logger.info("serving on http://%s:%d", host, server.server_port)
    return server


def run_server(checkpoint: str | None = None, host: str = "127.0.0.1", port: int = 8000,
               device: str = "cpu") -> None:
    """Load the model once and serve the demo (Flask's threaded server, debug off) until Ctrl-C or
    SIGTERM, either of which stops it cleanly (exit status 0).
    """
    app = create_app(load_predictor(checkpoint, device))
    # `docker stop` sends SIGTERM, which Python ignores as a container's PID 1 and otherwise dies
    # of: stop as on Ctrl-C instead (Werkzeug's serve_forever closes the socket on KeyboardInterrupt).
    signal.signal(signal.SIGTERM, _interrupt)
    logger.info("demo at http://%s:%d", host, port)
    app.run(host=host, port=port, debug=False, threaded=True, use_reloader=False, request_handler=RequestHandler)
    logger.info("stopped")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
