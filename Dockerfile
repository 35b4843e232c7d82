# dari, one node: `docker build -t dari .` then see compose.yaml (three nodes, Redis,
# PostgreSQL, nginx) or docs/deployment.md. Settings come from DARI_* variables (or a TOML file
# mounted and named with --config); an unknown one refuses to start.

# Build the wheels (dari's and its dependencies') apart, so the image keeps no build backend,
# pip cache or source tree.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src/ src/
RUN pip wheel --no-cache-dir --disable-pip-version-check --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The runtime dependencies only: no dev extra (tests, linters, the OpenAI and LangGraph
# backends). A deployment that uses those backends installs dari[openai] or dari[langgraph] in
# an image of its own built FROM this one.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels dari
# data/: the default SQLite store (one node). Made here, owned by dari, so that a volume
# mounted on it starts with that owner.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/dari --create-home dari \
    && install -d -o dari -g dari /var/lib/dari/data
USER dari
WORKDIR /var/lib/dari
# Listen on every interface of the container. That refuses auth.mode "none": give
# DARI_AUTH__MODE=jwt and a secret or key (docs/security.md).
ENV DARI_SERVER__HOST=0.0.0.0 \
    DARI_SERVER__PORT=8000
EXPOSE 8000
# Healthy = ready: 503 while the store or Redis is unreachable, or while draining after
# SIGTERM. python, since the slim image has no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('DARI_SERVER__PORT', '8000'), timeout=2)"]
# Exec form: dari is PID 1 and gets SIGTERM itself, so `docker stop` drains it. Give it
# server.drain_s plus about 15 s: `docker stop -t 30`, compose's stop_grace_period.
ENTRYPOINT ["dari", "serve"]
CMD []
